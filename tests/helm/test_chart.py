"""The Helm chart helm/tally, rendered offline with helm-python-sdk (no helm binary).

For the default values and three other value sets: ``helm lint --strict`` is clean,
every rendered manifest passes kubernetes-validate in strict mode (unknown fields are
errors), custom resources match their CRD's OpenAPI schema (jsonschema), and the
security-relevant parts (RBAC, NetworkPolicy, placement, pod security) say what
docs/kubernetes.md promises. The operator's environment as rendered is parsed by the
operator's own configuration loader, so the chart and the operator cannot drift.
"""

from __future__ import annotations

import base64
import copy
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml

from tally.tuples.settings import check_dealer
from tally_operator.settings import OperatorConfig

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "tally"
DOCS = ROOT / "docs" / "kubernetes.md"
KUBE_VERSION = "1.30.0"
NAMESPACE = "tally-p0"

PARTIES = [
    {
        "id": f"party-{i}",
        "index": i,
        "endpoints": {
            "partyLink": f"tally-{i}.example.org:7100",
            "tupleLink": f"tally-{i}.example.org:7200",
        },
    }
    for i in range(3)
]

# A well-formed digest for the tests (no real image has it).
DIGEST = "sha256:" + "0123456789abcdef" * 4

VALUE_SETS: dict[str, dict[str, Any]] = {
    "default": {},
    "three-parties": {
        "party": {"id": "party-0", "index": 0},
        "auth": {"existingSecret": "tally-tokens"},
        "partyLink": {
            "tls": {"secretName": "tally-partylink-tls"},
            "peers": [
                {"id": "party-1", "cidrs": ["203.0.113.10/32", "203.0.113.11/32"]},
                {"id": "party-2", "namespace": "tally-p2"},
            ],
        },
        "consortium": {"parties": PARTIES},
        "scheduling": {
            "zone": "europe-west1-b",
            "pinServicesToZone": True,
            "workerPriorityClassName": "tally-batch",
        },
        "networkPolicy": {"clients": {"cidrs": ["198.51.100.0/24"]}},
        "operator": {"workerEnvSecret": "tally-worker-credentials"},
        "rest": {"tls": {"secretName": "tally-rest-tls"}},
    },
    "external-stores": {
        "environment": "production",
        "postgresql": {"enabled": False},
        "externalDatabase": {"secretName": "tally-db"},
        "minio": {"enabled": False},
        "externalS3": {
            "endpoint": "s3.eu-west-1.amazonaws.com:443",
            "secretName": "tally-s3",
            "region": "eu-west-1",
        },
        "execution": {"stateClaim": "tally-execution-state"},
        "scheduling": {
            "spotTolerations": [
                {
                    "key": "node.kubernetes.io/lifecycle",
                    "operator": "Equal",
                    "value": "spot",
                    "effect": "NoSchedule",
                }
            ],
            "spotNodeLabels": {"node.kubernetes.io/lifecycle": "spot"},
        },
    },
    "stores-tls": {
        "environment": "production",
        "image": {"repository": "registry.example.com/tally/tally", "digest": DIGEST},
        "operatorImage": {
            "repository": "registry.example.com/tally/tally-operator",
            "digest": DIGEST,
        },
        "auth": {"existingSecret": "tally-tokens"},
        "rest": {"tls": {"secretName": "tally-rest-tls"}},
        "stores": {"tls": {"secretName": "tally-stores-tls"}},
        "partyLink": {
            "tls": {"secretName": "tally-partylink-tls"},
            "peers": [
                {"id": "party-1", "cidrs": ["203.0.113.10/32"], "endpointCidrs": ["192.0.2.1/32"]},
                {"id": "party-2", "cidrs": ["198.51.100.20/32"]},
            ],
        },
        "consortium": {"parties": PARTIES},
        "networkPolicy": {
            "egress": {
                "kubernetesApi": {"cidrs": ["10.96.0.1/32", "172.20.0.10/32"]},
                "identityProvider": {"cidrs": ["192.0.2.50/32"]},
            }
        },
    },
    "minimal": {
        "environment": "development",
        "operator": {"enabled": False},
        "networkPolicy": {"enabled": False},
        "podDisruptionBudget": {"enabled": False},
        "tupleService": {"generator": "dealer", "dealer": {"address": "tally-dealer:7200"}},
    },
}


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    """All objects the chart renders (CRDs from crds/ included), as dicts."""
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema(values)
        manifests = chart.render(values=values, name="p0", namespace=NAMESPACE, is_install=True)
        crds = [crd["data"] for crd in chart.crds]
    documents: list[dict[str, Any]] = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        documents.extend(doc for doc in yaml.safe_load_all(text) if doc)
    for text in crds:
        documents.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return documents


@pytest.fixture(scope="module", params=sorted(VALUE_SETS))
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render(VALUE_SETS[request.param])


def objects(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def crd_schema(plural: str) -> dict[str, Any]:
    (path,) = (CHART / "crds").glob(f"{plural}.tally.dev.yaml")
    crd = yaml.safe_load(path.read_text())
    (version,) = crd["spec"]["versions"]
    return version["schema"]["openAPIV3Schema"]  # type: ignore[no-any-return]


def validate_custom_resource(resource: dict[str, Any]) -> None:
    """Check a custom resource against its CRD (OpenAPI 3.0 schemas are draft-4 JSON schema)."""
    plural = {"AnalyticsJob": "analyticsjobs", "Consortium": "consortia"}[resource["kind"]]
    jsonschema.Draft4Validator(crd_schema(plural)).validate(resource)


def pod_specs(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for doc in docs:
        if doc["kind"] in ("Deployment", "StatefulSet"):
            yield doc["metadata"]["name"], doc["spec"]["template"]["spec"]


# --- every value set ------------------------------------------------------------------


def test_helm_lint_is_clean_in_strict_mode(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    name, _ = rendered
    report = helm.lint(CHART, VALUE_SETS[name], strict=True, namespace=NAMESPACE)
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_every_manifest_passes_strict_kubernetes_validation(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    _, docs = rendered
    custom = [d for d in docs if d["apiVersion"].startswith("tally.dev/")]
    for doc in docs:
        if doc in custom:
            validate_custom_resource(doc)
        else:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
    kinds = {d["kind"] for d in docs}
    assert {"CustomResourceDefinition", "Deployment", "Service"} <= kinds


def test_pods_run_as_non_root_with_read_only_root_filesystems(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    _, docs = rendered
    for name, pod in pod_specs(docs):
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        for container in pod["containers"] + pod.get("initContainers", []):
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["capabilities"]["drop"] == ["ALL"], name
            assert "resources" in container, name
        if "postgresql" not in name and "minio" not in name and "operator" not in name:
            container = pod["containers"][0]
            assert container["livenessProbe"]["httpGet"]["path"] == "/healthz", name
            assert container["readinessProbe"]["httpGet"]["path"] == "/readyz", name


def test_the_operator_accepts_its_rendered_configuration(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    name, docs = rendered
    operator = objects(docs, "Deployment").get("p0-tally-operator")
    if not VALUE_SETS[name].get("operator", {}).get("enabled", True):
        assert operator is None
        return
    assert operator is not None
    (container,) = operator["spec"]["template"]["spec"]["containers"]
    environ = {
        e["name"]: e["value"] if "value" in e else f"<from {next(iter(e['valueFrom']))}>"
        for e in container["env"]
    }
    environ["TALLY_OPERATOR_NAMESPACE"] = NAMESPACE  # a fieldRef in the pod
    config = OperatorConfig.from_env(environ)
    scheme = "https" if VALUE_SETS[name].get("rest") else "http"
    assert config.execution_url == f"{scheme}://p0-tally-execution:8000"
    assert config.worker_service_account == "p0-tally-worker"
    spot = VALUE_SETS[name].get("scheduling", {}).get("spotTolerations")
    if spot:
        assert list(config.spot_tolerations) == spot


# --- what the chart promises -----------------------------------------------------------


def test_crds_have_printer_columns_short_names_and_a_status_subresource() -> None:
    docs = render({})
    crds = objects(docs, "CustomResourceDefinition")
    job = crds["analyticsjobs.tally.dev"]["spec"]
    assert job["group"] == "tally.dev" and job["scope"] == "Namespaced"
    assert "aj" in job["names"]["shortNames"]
    (version,) = job["versions"]
    assert version["name"] == "v1alpha1" and version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"] if "priority" not in c]
    assert columns == ["Phase", "Progress", "Zone", "Restarts", "Age"]
    consortium = crds["consortia.tally.dev"]["spec"]
    assert consortium["names"]["kind"] == "Consortium" and consortium["names"]["shortNames"]


def test_operator_rbac_is_least_privilege() -> None:
    docs = render({})
    (role,) = objects(docs, "Role").values()
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"]
        assert "*" not in rule["apiGroups"]
    granted = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert ("tally.dev", "analyticsjobs", "watch") in granted
    assert ("tally.dev", "analyticsjobs/status", "patch") in granted
    assert ("batch", "jobs", "create") in granted and ("batch", "jobs", "delete") in granted
    assert ("", "pods", "watch") in granted and ("", "pods", "delete") not in granted
    # Secrets: get (the analyst credentials an AnalyticsJob names) and create (each job's
    # worker-token Secret), never list, watch, update or delete
    assert {v for _, r, v in granted if r == "secrets"} == {"get", "create"}
    (cluster_role,) = objects(docs, "ClusterRole").values()
    assert cluster_role["rules"] == [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}]
    (binding,) = objects(docs, "ClusterRoleBinding").values()
    assert binding["subjects"][0]["namespace"] == NAMESPACE
    workers = objects(docs, "ServiceAccount")["p0-tally-worker"]
    assert workers["automountServiceAccountToken"] is False


def _ingress_rules(docs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    policy = objects(docs, "NetworkPolicy")[name]
    return policy["spec"].get("ingress", [])  # type: ignore[no-any-return]


def test_network_policy_admits_partylink_only_from_the_peer_parties() -> None:
    docs = render(VALUE_SETS["three-parties"])
    policies = objects(docs, "NetworkPolicy")
    deny = policies["p0-tally-default-deny"]["spec"]
    assert deny["policyTypes"] == ["Ingress"] and "ingress" not in deny
    peers = [
        {"ipBlock": {"cidr": "203.0.113.10/32"}},
        {"ipBlock": {"cidr": "203.0.113.11/32"}},
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "tally-p2"}}},
    ]
    rules = _ingress_rules(docs, "p0-tally-execution")
    (partylink,) = [r for r in rules if r["ports"] == [{"port": "partylink"}]]
    assert partylink["from"] == peers
    (rest,) = [r for r in rules if r["ports"] == [{"port": "http"}]]
    assert {"ipBlock": {"cidr": "198.51.100.0/24"}} in rest["from"]
    assert not any("ipBlock" in s and s["ipBlock"]["cidr"].startswith("203.") for s in rest["from"])
    (tuplelink,) = [
        r
        for r in _ingress_rules(docs, "p0-tally-tuple-service")
        if r["ports"] == [{"port": "tuplelink"}]
    ]
    assert tuplelink["from"] == peers
    # Peers never reach a worker directly: the execution service's gateway splices
    # their connections through; only the execution pods may connect to workers.
    (workers,) = _ingress_rules(docs, "p0-tally-workers")
    assert workers["from"] == [EXECUTION_PODS]


EXECUTION_PODS = {
    "podSelector": {
        "matchLabels": {
            "app.kubernetes.io/instance": "p0",
            "app.kubernetes.io/component": "execution",
        }
    }
}


def test_without_peers_nothing_reaches_partylink() -> None:
    docs = render({})
    assert [r["from"] for r in _ingress_rules(docs, "p0-tally-workers")] == [[EXECUTION_PODS]]
    ports = [r["ports"] for r in _ingress_rules(docs, "p0-tally-execution")]
    assert ports == [[{"port": "http"}]]
    for rule in _ingress_rules(docs, "p0-tally-execution"):
        assert rule["from"], "an empty 'from' would admit everyone"


def test_zone_pinning_and_spot_settings_reach_services_and_the_operator() -> None:
    docs = render(VALUE_SETS["three-parties"])
    for name, pod in pod_specs(docs):
        terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        assert terms["nodeSelectorTerms"][0]["matchExpressions"] == [
            {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["europe-west1-b"]}
        ], name
        assert "tolerations" not in pod, name  # services never go to spot nodes
    operator = objects(docs, "Deployment")["p0-tally-operator"]
    env = {e["name"]: e for e in operator["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["TALLY_OPERATOR_DEFAULT_ZONE"]["value"] == "europe-west1-b"
    tolerations = json.loads(env["TALLY_OPERATOR_SPOT_TOLERATIONS"]["value"])
    assert {t["key"] for t in tolerations} == {
        "cloud.google.com/gke-spot",
        "kubernetes.azure.com/scalesetpriority",
        "eks.amazonaws.com/capacityType",
        "cloud.google.com/gke-preemptible",
    }
    assert env["TALLY_OPERATOR_PARTYLINK_TLS_SECRET"]["value"] == "tally-partylink-tls"
    assert env["TALLY_OPERATOR_EXECUTION_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "tally-tokens",
        "key": "operatorToken",
    }
    execution = objects(docs, "Deployment")["p0-tally-execution"]["spec"]["template"]["spec"]
    exec_env = {e["name"]: e.get("value") for e in execution["containers"][0]["env"]}
    assert exec_env["TALLY_EXECUTION_TLS_CERT"] == "/etc/tally/tls/tls.crt"
    (consortium,) = objects(docs, "Consortium").values()
    assert consortium["spec"]["localParty"] == "party-0"
    assert len(consortium["spec"]["parties"]) == 3


def _mounted_file(pod: dict[str, Any], env_name: str) -> tuple[str, str]:
    """(ConfigMap name, key) of the file an env variable of the pod's container points at."""
    container = pod["containers"][0]
    path = next(e["value"] for e in container["env"] if e["name"] == env_name)
    mount = next(m for m in container["volumeMounts"] if path.startswith(m["mountPath"] + "/"))
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    return volume["configMap"]["name"], path[len(mount["mountPath"]) + 1 :]


def test_services_and_workers_take_their_peers_from_the_consortium_document(
    tmp_path: Path,
) -> None:
    """Issue 17 item 6: peers come from the Consortium (the operator's ConfigMap), not env.

    The rendered Consortium is turned into the document exactly as the operator does;
    the execution service, the tuple-service and a worker read their peers from it.
    """
    from tally.common.consortium import peers_from_file
    from tally_operator.builders.job import consortium_configmap_name
    from tally_operator.consortium import parse_consortium_spec
    from tally_operator.resources import CONSORTIUM_FILE

    docs = render(VALUE_SETS["three-parties"])
    (resource,) = objects(docs, "Consortium").values()
    document = parse_consortium_spec(resource["spec"]).document()
    path = tmp_path / CONSORTIUM_FILE
    path.write_text(json.dumps(document))
    configmap = consortium_configmap_name(resource["metadata"]["name"])
    deployments = objects(docs, "Deployment")
    for name, variable, key, port in [
        ("p0-tally-execution", "TALLY_EXECUTION_CONSORTIUM_FILE", "partyLink", 7100),
        ("p0-tally-tuple-service", "TALLY_TUPLES_CONSORTIUM_FILE", "tupleLink", 7200),
    ]:
        pod = deployments[name]["spec"]["template"]["spec"]
        env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
        assert not [n for n in env if n.endswith("_PEERS")], name
        assert _mounted_file(pod, variable) == (configmap, CONSORTIUM_FILE), name
        party = int(next(v for n, v in env.items() if n.endswith("_PARTY")) or 0)
        peers, index = peers_from_file(path, key, party, service=name)
        assert (peers, index) == ([f"tally-{i}.example.org:{port}" for i in range(3)], 0)
    workers = objects(docs, "ConfigMap")["p0-tally-worker-env"]["data"]
    assert "TALLY_EXECUTION_PEERS" not in workers  # the operator mounts the document
    tuples_env = deployments["p0-tally-tuple-service"]["spec"]["template"]["spec"]
    generator = next(
        e["value"]
        for e in tuples_env["containers"][0]["env"]
        if e["name"] == "TALLY_TUPLES_GENERATOR"
    )
    assert document["tupleGenerator"] == generator


def test_without_the_operator_peers_come_from_the_values() -> None:
    values = copy.deepcopy(VALUE_SETS["three-parties"])
    values["operator"] = {"enabled": False}
    execution = objects(render(values), "Deployment")["p0-tally-execution"]
    env = {
        e["name"]: e.get("value")
        for e in execution["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert json.loads(env["TALLY_EXECUTION_PEERS"]) == [
        f"tally-{i}.example.org:7100" for i in range(3)
    ]
    assert "TALLY_EXECUTION_CONSORTIUM_FILE" not in env


def test_external_stores_replace_the_in_cluster_ones() -> None:
    docs = render(VALUE_SETS["external-stores"])
    assert objects(docs, "StatefulSet") == {}
    store = objects(docs, "Deployment")["p0-tally-secret-store"]["spec"]["template"]["spec"]
    env = {e["name"]: e for e in store["containers"][0]["env"]}
    assert env["TALLY_SECRET_STORE_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "tally-db"
    assert env["TALLY_SECRET_STORE_S3_ENDPOINT"]["value"] == "s3.eu-west-1.amazonaws.com:443"
    assert env["TALLY_SECRET_STORE_S3_SECURE"]["value"] == "true"
    execution = objects(docs, "Deployment")["p0-tally-execution"]["spec"]["template"]["spec"]
    state = next(v for v in execution["volumes"] if v["name"] == "state")
    assert state["persistentVolumeClaim"]["claimName"] == "tally-execution-state"


def test_in_cluster_stores_by_default() -> None:
    docs = render({})
    assert set(objects(docs, "StatefulSet")) == {"p0-tally-postgresql", "p0-tally-minio"}
    # before, a budget over one replica protected nothing (regression): only with replicas
    assert objects(docs, "PodDisruptionBudget") == {}
    scaled = render({"secretStore": {"replicas": 2}})
    assert set(objects(scaled, "PodDisruptionBudget")) == {"p0-tally-secret-store"}
    store = objects(docs, "Deployment")["p0-tally-secret-store"]["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in store["containers"][0]["env"]}
    assert env["TALLY_SECRET_STORE_DATABASE_URL"].endswith("@p0-tally-postgresql:5432/tally")
    assert env["TALLY_SECRET_STORE_S3_ENDPOINT"] == "p0-tally-minio:9000"


@pytest.mark.parametrize(
    "values",
    [
        {"party": {"id": "Party 0", "index": 0}},
        {"party": {"id": "p0", "index": -1}},
        {"operator": {"pollInterval": 0}},
        {"tupleService": {"generator": "trusted-friend"}},
        {"tupleService": {"generator": "dealer"}},
        {"tupleService": {"generator": "dealer", "dealer": {"address": ""}}},
        {"tupleService": {"generator": "dealer", "dealer": {"address": "d:72", "name": "party-1"}}},
        {"partyLink": {"peers": [{"id": "party-1"}]}},
        {"minio": {"enabled": False}},
        {"replicas": 3},
    ],
)
def test_values_schema_refuses_bad_values(values: dict[str, Any]) -> None:
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmValuesError):
        chart.validate_schema(values)


# --- custom resources ------------------------------------------------------------------


def doc_examples() -> list[dict[str, Any]]:
    """The YAML manifests shown in docs/kubernetes.md."""
    blocks = re.findall(r"```yaml\n(.*?)```", DOCS.read_text(), flags=re.S)
    return [
        doc
        for block in blocks
        for doc in yaml.safe_load_all(block)
        if isinstance(doc, dict) and str(doc.get("apiVersion", "")).startswith("tally.dev/")
    ]


def test_documented_custom_resources_match_the_crds() -> None:
    examples = doc_examples()
    assert {e["kind"] for e in examples} == {"AnalyticsJob", "Consortium"}
    for example in examples:
        validate_custom_resource(example)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("spec", "program"), "Group By!"),
        (("spec", "partitions"), 0),
        (("spec", "partitions"), 5000),
        (("spec", "scheduling", "spot"), "yes"),
        (("spec", "scheduling", "maxRestarts"), -1),
        (("spec", "outputs"), []),
        (("spec", "dp", "epsilon"), 0),
    ],
)
def test_the_crd_schema_rejects_invalid_analytics_jobs(path: tuple[str, ...], value: Any) -> None:
    (example,) = [e for e in doc_examples() if e["kind"] == "AnalyticsJob"][:1]
    broken = copy.deepcopy(example)
    target = broken
    for key in path[:-1]:
        target = target.setdefault(key, {})
    target[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError):
        validate_custom_resource(broken)


def _container(docs: list[dict[str, Any]], deployment: str) -> dict[str, Any]:
    """The one container of a rendered Deployment."""
    (container,) = objects(docs, "Deployment")[deployment]["spec"]["template"]["spec"]["containers"]
    return container  # type: ignore[no-any-return]


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_workers_are_external_pods_with_checkpoints_in_s3() -> None:
    docs = render(VALUE_SETS["three-parties"])
    execution = _container(docs, "p0-tally-execution")
    env = _env(execution)
    assert env["TALLY_EXECUTION_WORKERS"] == "external"
    assert env["TALLY_EXECUTION_S3_ENDPOINT"] == "p0-tally-minio:9000"
    assert env["TALLY_EXECUTION_S3_PREFIX"] == "party-0/"
    assert env["TALLY_EXECUTION_S3_SECRET_KEY"]["secretKeyRef"]["key"] == "secretKey"
    workers = objects(docs, "ConfigMap")["p0-tally-worker-env"]["data"]
    for name in ("TALLY_EXECUTION_S3_ENDPOINT", "TALLY_EXECUTION_S3_BUCKET"):
        assert workers[name] == env[name]
    assert workers["TALLY_EXECUTION_S3_PREFIX"] == "party-0/"
    operator = _container(docs, "p0-tally-operator")
    command = json.loads(_env(operator)["TALLY_OPERATOR_WORKER_COMMAND"])
    assert command == ["python", "-m", "tally.execution.pod"]
    policy = objects(docs, "NetworkPolicy")["p0-tally-execution"]["spec"]["ingress"][0]
    assert any(
        source.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/component")
        == "worker"
        for source in policy["from"]
    )


def test_without_the_operator_the_service_starts_its_own_workers() -> None:
    docs = render(VALUE_SETS["minimal"])
    execution = _container(docs, "p0-tally-execution")
    assert _env(execution)["TALLY_EXECUTION_WORKERS"] == "process"


def test_execution_and_workers_take_tuples_from_the_tuple_service() -> None:
    docs = render(VALUE_SETS["three-parties"])
    execution = _container(docs, "p0-tally-execution")
    env = _env(execution)
    assert env["TALLY_EXECUTION_INPUTS"] == "secret-store"
    assert env["TALLY_EXECUTION_TUPLES"] == "service"
    assert env["TALLY_EXECUTION_TUPLES_URL"] == "https://p0-tally-tuple-service:8000"
    workers = objects(docs, "ConfigMap")["p0-tally-worker-env"]["data"]
    assert workers["TALLY_EXECUTION_TUPLES"] == "service"
    assert workers["TALLY_EXECUTION_TUPLES_URL"] == env["TALLY_EXECUTION_TUPLES_URL"]


def test_dealer_mode_names_the_dealer_and_admits_it_to_tuplelink_only() -> None:
    values = dict(VALUE_SETS["three-parties"])
    values["tupleService"] = {
        "generator": "dealer",
        "dealer": {"address": "dealer.example.org:7200", "cidrs": ["192.0.2.7/32"]},
    }
    docs = render(values)
    tuples = _container(docs, "p0-tally-tuple-service")
    env = _env(tuples)
    assert env["TALLY_TUPLES_GENERATOR"] == "dealer"
    assert env["TALLY_TUPLES_DEALER"] == "dealer.example.org:7200"
    assert env["TALLY_TUPLES_DEALER_NAME"] == "dealer"
    check_dealer(env["TALLY_TUPLES_DEALER"], env["TALLY_TUPLES_DEALER_NAME"], [], "production")
    dealer = {"ipBlock": {"cidr": "192.0.2.7/32"}}
    tuple_rules = _ingress_rules(docs, "p0-tally-tuple-service")
    tuplelink = [r for r in tuple_rules if r["ports"] == [{"port": "tuplelink"}]]
    assert len(tuplelink) == 1 and dealer in tuplelink[0]["from"]
    for name in ("p0-tally-execution", "p0-tally-secret-store"):
        assert all(dealer not in rule.get("from", []) for rule in _ingress_rules(docs, name))
    hm3 = render(VALUE_SETS["three-parties"])
    plain = _container(hm3, "p0-tally-tuple-service")
    assert "TALLY_TUPLES_DEALER" not in _env(plain)


def _env_values(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def test_rest_tls_makes_every_listener_and_call_https() -> None:
    docs = render(VALUE_SETS["three-parties"])
    deployments = objects(docs, "Deployment")
    for component, prefix in (
        ("secret-store", "TALLY_SECRET_STORE_"),
        ("tuple-service", "TALLY_TUPLES_"),
        ("execution", "TALLY_EXECUTION_"),
    ):
        pod = deployments[f"p0-tally-{component}"]["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        env = _env_values(container)
        assert env[f"{prefix}HTTPS_CERT"] == "/etc/tally/rest/tls.crt", component
        assert container["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
        assert {"name": "rest-tls", "mountPath": "/etc/tally/rest", "readOnly": True} in container[
            "volumeMounts"
        ]
        assert any(
            v.get("secret", {}).get("secretName") == "tally-rest-tls" for v in pod["volumes"]
        )
    execution = _env_values(
        deployments["p0-tally-execution"]["spec"]["template"]["spec"]["containers"][0]
    )
    # before, the chart wired service tokens and share uploads over http:// (regression)
    assert execution["TALLY_EXECUTION_SECRET_STORE_URL"].startswith("https://p0-tally-secret-store")
    assert execution["TALLY_EXECUTION_TUPLES_URL"].startswith("https://p0-tally-tuple-service")
    assert execution["TALLY_EXECUTION_REST_CA"] == "/etc/tally/rest/ca.crt"
    operator = _env_values(
        deployments["p0-tally-operator"]["spec"]["template"]["spec"]["containers"][0]
    )
    assert operator["TALLY_OPERATOR_EXECUTION_URL"].startswith("https://")
    assert operator["TALLY_OPERATOR_REST_TLS_SECRET"] == "tally-rest-tls"
    worker_env = objects(docs, "ConfigMap")["p0-tally-worker-env"]["data"]
    assert worker_env["TALLY_EXECUTION_SECRET_STORE_URL"].startswith("https://")
    plain = render({})
    plain_execution = objects(plain, "Deployment")["p0-tally-execution"]
    assert "HTTPS_CERT" not in str(plain_execution)  # without the Secret: development only


def test_image_pull_secrets_reach_the_services_and_every_worker_pod() -> None:
    docs = render({**VALUE_SETS["three-parties"], "imagePullSecrets": [{"name": "regcred"}]})
    for name in ("p0-tally-secret-store", "p0-tally-tuple-service", "p0-tally-execution"):
        pod = objects(docs, "Deployment")[name]["spec"]["template"]["spec"]
        assert pod["imagePullSecrets"] == [{"name": "regcred"}], name
    # before, worker pods sat in ImagePullBackOff with a private registry (regression):
    # the workers' ServiceAccount carries the secret, so every pod using it gets it
    workers = objects(docs, "ServiceAccount")["p0-tally-worker"]
    assert workers["imagePullSecrets"] == [{"name": "regcred"}]


def test_the_operator_may_set_owner_references_under_enforcement() -> None:
    (role,) = objects(render({}), "Role").values()
    finalizers = [r for r in role["rules"] if "analyticsjobs/finalizers" in r["resources"]]
    assert finalizers and finalizers[0]["verbs"] == ["update"]


def test_only_the_releases_own_stores_may_be_plaintext() -> None:
    def stores(values: dict[str, Any], component: str) -> list[str]:
        pod = objects(render(values), "Deployment")[f"p0-tally-{component}"]["spec"]["template"]
        env = _env_values(pod["spec"]["containers"][0])
        return list(json.loads(env[[k for k in env if k.endswith("IN_CLUSTER_STORES")][0]]))

    assert stores({}, "secret-store") == ["database", "s3"]
    assert "s3" in stores({}, "execution")
    assert stores(VALUE_SETS["external-stores"], "secret-store") == []
    assert stores(VALUE_SETS["external-stores"], "tuple-service") == []


def test_execution_state_is_on_a_volume_by_default() -> None:
    # before, job records lived on an emptyDir: a reschedule forgot running jobs (regression)
    docs = render({})
    (claim,) = objects(docs, "PersistentVolumeClaim").values()
    assert claim["metadata"]["name"] == "p0-tally-execution-state"
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    pod = objects(docs, "Deployment")["p0-tally-execution"]["spec"]["template"]["spec"]
    state = next(v for v in pod["volumes"] if v["name"] == "state")
    assert state["persistentVolumeClaim"]["claimName"] == "p0-tally-execution-state"
    existing = render({"execution": {"stateClaim": "my-claim"}})
    assert objects(existing, "PersistentVolumeClaim") == {}


def test_the_public_endpoint_can_be_an_l4_load_balancer_that_keeps_source_addresses() -> None:
    values = {**VALUE_SETS["three-parties"]}
    values["execution"] = {**values.get("execution", {}), "public": {"enabled": True, "port": 443}}
    docs = render(values)
    service = objects(docs, "Service")["p0-tally-execution-public"]["spec"]
    assert service["type"] == "LoadBalancer" and service["externalTrafficPolicy"] == "Local"
    assert service["ports"] == [{"name": "partylink", "port": 443, "targetPort": "partylink"}]
    (deployment,) = [
        d
        for d in docs
        if d["kind"] == "Deployment" and d["metadata"]["name"] == "p0-tally-execution"
    ]
    env = {
        e["name"]: e.get("value")
        for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["TALLY_EXECUTION_CONTROL_PORT"] == "7100"  # the pod's port, not the public one
    with pytest.raises(Exception, match="externalTrafficPolicy|Local"):
        render(
            {**values, "execution": {"public": {"enabled": True, "externalTrafficPolicy": "Nope"}}}
        )


# --- images by digest ------------------------------------------------------------------


def test_images_are_referenced_by_digest_when_one_is_given() -> None:
    docs = render(VALUE_SETS["stores-tls"])
    for name in ("p0-tally-secret-store", "p0-tally-tuple-service", "p0-tally-execution"):
        pod = objects(docs, "Deployment")[name]["spec"]["template"]["spec"]
        for container in pod["containers"] + pod.get("initContainers", []):
            assert container["image"] == f"registry.example.com/tally/tally@{DIGEST}", name
    operator = _container(docs, "p0-tally-operator")
    assert operator["image"] == f"registry.example.com/tally/tally-operator@{DIGEST}"
    # the workers the operator starts run the same image, by the same digest
    worker_image = _env_values(operator)["TALLY_OPERATOR_WORKER_IMAGE"]
    assert worker_image == f"registry.example.com/tally/tally@{DIGEST}"
    by_tag = render({"image": {"repository": "r.example/tally", "tag": "0.1.0"}})
    assert _container(by_tag, "p0-tally-execution")["image"] == "r.example/tally:0.1.0"


@pytest.mark.parametrize(
    "values",
    [
        {"image": {"repository": "r/tally", "digest": "0123abcd"}},
        {"image": {"repository": "r/tally", "digest": "sha256:" + "0" * 63}},
        {"image": {"repository": "r/tally", "digest": "sha256:" + "A" * 64}},
        {"operatorImage": {"repository": "r/op", "digest": "sha512:" + "0" * 128}},
        {"postgresql": {"image": "postgres:16-alpine@sha256:abc"}},
        {"minio": {"image": "quay.io/minio/minio@md5:" + "0" * 32}},
    ],
)
def test_values_schema_refuses_malformed_digests(values: dict[str, Any]) -> None:
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmValuesError):
        chart.validate_schema(values)


def test_store_images_may_be_pinned_by_digest() -> None:
    image = f"postgres:16-alpine@{DIGEST}"
    docs = render({"postgresql": {"image": image}})
    pod = objects(docs, "StatefulSet")["p0-tally-postgresql"]["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == image


# --- egress ----------------------------------------------------------------------------


def _egress(docs: list[dict[str, Any]], component: str) -> list[dict[str, Any]]:
    policy = objects(docs, "NetworkPolicy")[f"p0-tally-{component}-egress"]["spec"]
    assert policy["policyTypes"] == ["Egress"]
    return policy["egress"]  # type: ignore[no-any-return]


def _reaches(rules: list[dict[str, Any]], port: int | str) -> list[dict[str, Any]]:
    """The rules that admit ``port`` (a rule without ports admits every port)."""
    return [r for r in rules if "ports" not in r or any(p["port"] == port for p in r["ports"])]


EGRESS_COMPONENTS = (
    "secret-store",
    "tuple-service",
    "execution",
    "workers",
    "operator",
    "postgresql",
    "minio",
    "minio-users",
)


def test_every_tally_pod_has_an_egress_policy_that_admits_nothing_unlisted(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    name, docs = rendered
    policies = objects(docs, "NetworkPolicy")
    if not VALUE_SETS[name].get("networkPolicy", {}).get("enabled", True):
        assert policies == {}
        return
    in_cluster = {"postgresql", "minio"} & {
        d["metadata"]["name"].removeprefix("p0-tally-")
        for d in objects(docs, "StatefulSet").values()
    }
    expected = set(EGRESS_COMPONENTS) - ({"postgresql", "minio"} - in_cluster)
    if "minio" not in in_cluster:
        expected.discard("minio-users")
    egress = {
        n.removeprefix("p0-tally-").removesuffix("-egress") for n in policies if "egress" in n
    }
    assert egress == expected
    for component in expected:
        rules = _egress(docs, component)
        assert rules[0]["ports"] == [
            {"port": 53, "protocol": "UDP"},
            {"port": 53, "protocol": "TCP"},
        ]
        for rule in rules:
            # a rule with neither would admit every address on every port
            assert rule.get("to") or rule.get("ports"), (component, rule)
            assert rule.get("to") != [], (component, rule)


def test_only_the_operator_reaches_the_kubernetes_api() -> None:
    docs = render(VALUE_SETS["stores-tls"])
    api = [
        {"ipBlock": {"cidr": "10.96.0.1/32"}},
        {"ipBlock": {"cidr": "172.20.0.10/32"}},
    ]
    (rule,) = [r for r in _egress(docs, "operator") if r.get("to") == api]
    assert [p["port"] for p in rule["ports"]] == [443, 6443]
    for component in ("secret-store", "tuple-service", "execution", "workers", "minio"):
        assert all(r.get("to") != api for r in _egress(docs, component)), component
    # without CIDRs the operator may reach any address, on the API ports only
    (default,) = [r for r in _egress(render({}), "operator") if "to" not in r]
    assert [p["port"] for p in default["ports"]] == [443, 6443]


def test_egress_reaches_the_stores_by_pod_selector_and_external_ones_by_port() -> None:
    docs = render(VALUE_SETS["three-parties"])
    store_rules = _egress(docs, "secret-store")[1:]  # after DNS
    selectors = [
        r["to"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
        for r in store_rules
        if "podSelector" in r.get("to", [{}])[0]
    ]
    assert selectors == ["postgresql", "minio"]
    assert all(r["ports"] != [{"port": 443, "protocol": "TCP"}] for r in store_rules)
    # the minio pods may be reached by the workers and the execution service too
    for component in ("execution", "workers"):
        assert _reaches(_egress(docs, component), "s3")
    external = render(
        {
            **VALUE_SETS["external-stores"],
            "networkPolicy": {"egress": {"externalDatabase": {"cidrs": ["10.20.0.0/24"]}}},
        }
    )
    rules = _egress(external, "tuple-service")
    (database,) = _reaches([r for r in rules if "ports" in r], 5432)
    assert database["to"] == [{"ipBlock": {"cidr": "10.20.0.0/24"}}]
    (s3,) = _reaches([r for r in rules if "ports" in r], 443)
    assert "to" not in s3  # empty cidrs: any address, on port 443 only


def test_egress_reaches_the_peers_on_their_consortium_ports_only() -> None:
    docs = render(VALUE_SETS["stores-tls"])
    peers_to = [
        [{"ipBlock": {"cidr": "192.0.2.1/32"}}],  # endpointCidrs win over cidrs
        [{"ipBlock": {"cidr": "198.51.100.20/32"}}],
    ]
    execution = [r for r in _egress(docs, "execution") if r.get("to") in peers_to]
    assert [r["ports"] for r in execution] == [[{"port": 7100, "protocol": "TCP"}]] * 2
    tuples = [r for r in _egress(docs, "tuple-service") if r.get("to") in peers_to]
    assert [r["ports"] for r in tuples] == [[{"port": 7200, "protocol": "TCP"}]] * 2
    # workers dial the peers' public PartyLink endpoints only (their gateways route to
    # the workers), and the execution service reaches its own workers' pods
    workers = [r for r in _egress(docs, "workers") if r.get("to") in peers_to]
    assert [r["ports"] for r in workers] == [[{"port": 7100, "protocol": "TCP"}]] * 2
    own = [r for r in _egress(docs, "execution") if "ports" not in r]
    assert [r["to"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
            for r in own] == ["worker"]  # fmt: skip
    for component in ("secret-store", "operator", "postgresql", "minio"):
        assert all(r.get("to") not in peers_to for r in _egress(docs, component)), component
    # the identity provider: the three services only
    idp = [{"ipBlock": {"cidr": "192.0.2.50/32"}}]
    for component in ("secret-store", "tuple-service", "execution"):
        assert any(r.get("to") == idp for r in _egress(docs, component)), component
    assert all(r.get("to") != idp for r in _egress(docs, "workers"))


def test_egress_in_dealer_mode_and_with_extra_rules() -> None:
    extra = {"to": [{"ipBlock": {"cidr": "192.0.2.99/32"}}], "ports": [{"port": 8443}]}
    values = {
        **VALUE_SETS["three-parties"],
        "tupleService": {
            "generator": "dealer",
            "dealer": {"address": "dealer.example.org:7300", "cidrs": ["192.0.2.7/32"]},
        },
        "networkPolicy": {"egress": {"extraRules": [extra]}},
    }
    docs = render(values)
    (dealer,) = [
        r
        for r in _egress(docs, "tuple-service")
        if r.get("to") == [{"ipBlock": {"cidr": "192.0.2.7/32"}}]
    ]
    assert dealer["ports"] == [{"port": 7300, "protocol": "TCP"}]
    for component in EGRESS_COMPONENTS:
        assert _egress(docs, component)[-1] == extra, component
    off = render({"networkPolicy": {"egress": {"enabled": False}}})
    assert not [n for n in objects(off, "NetworkPolicy") if n.endswith("-egress")]
    assert "p0-tally-default-deny" in objects(off, "NetworkPolicy")


def test_process_workers_reach_only_the_peers_endpoints_from_the_execution_pod() -> None:
    values = {**VALUE_SETS["three-parties"], "execution": {"workers": "process"}}
    rules = _egress(render(values), "execution")
    peer = [
        r
        for r in rules
        if r.get("to")
        == [{"ipBlock": {"cidr": "203.0.113.10/32"}}, {"ipBlock": {"cidr": "203.0.113.11/32"}}]
    ]
    assert len(peer) == 1 and peer[0]["ports"] == [{"port": 7100, "protocol": "TCP"}]


def _s3_secrets(docs: list[dict[str, Any]]) -> dict[str, set[str]]:
    """The Secrets every pod template takes S3 or MinIO credentials from, by workload."""
    found: dict[str, set[str]] = {}
    for kind in ("Deployment", "StatefulSet", "Job"):
        for name, workload in objects(docs, kind).items():
            for container in workload["spec"]["template"]["spec"]["containers"]:
                for item in container.get("env", []):
                    ref = item.get("valueFrom", {}).get("secretKeyRef")
                    if ref and (
                        "S3_" in item["name"] or item["name"].startswith(("MINIO", "ROOT"))
                    ):
                        found.setdefault(name, set()).add(ref["name"])
    return found


def test_each_component_has_s3_credentials_for_its_own_bucket_only() -> None:
    """Regression (issue 14): the services and the workers all held the MinIO root key,
    so a worker pod could read every dataset's shares in the secret-store's bucket."""
    docs = render({})
    assert _s3_secrets(docs) == {
        "p0-tally-secret-store": {"p0-tally-s3-secret-store"},
        "p0-tally-tuple-service": {"p0-tally-s3-tuple-service"},
        "p0-tally-execution": {"p0-tally-s3-execution"},
        "p0-tally-minio": {"p0-tally-minio"},  # the root key: MinIO and the hook Job only
        "p0-tally-minio-users": {"p0-tally-minio"},
    }
    secrets = objects(docs, "Secret")
    keys = {
        name: {k: base64.b64decode(v).decode() for k, v in secrets[name]["data"].items()}
        for name in secrets
        if name.startswith("p0-tally-s3-") or name == "p0-tally-worker-s3"
    }
    users = {
        keys[f"p0-tally-s3-{c}"]["accessKey"]
        for c in ("secret-store", "tuple-service", "execution")
    }
    root = base64.b64decode(secrets["p0-tally-minio"]["data"]["accessKey"]).decode()
    assert len(users) == 3 and root not in users
    # the workers' environment carries the execution service's user, nothing else
    assert keys["p0-tally-worker-s3"] == {
        "TALLY_EXECUTION_S3_ACCESS_KEY": keys["p0-tally-s3-execution"]["accessKey"],
        "TALLY_EXECUTION_S3_SECRET_KEY": keys["p0-tally-s3-execution"]["secretKey"],
    }
    operator = objects(docs, "Deployment")["p0-tally-operator"]
    env = {
        e["name"]: e.get("value")
        for e in operator["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["TALLY_OPERATOR_WORKER_ENV_SECRET"] == "p0-tally-worker-s3"
    # each user's policy names its own bucket and nothing else
    policies = objects(docs, "ConfigMap")["p0-tally-minio-users"]["data"]
    buckets = {
        "secret-store": "tally-secret-store",
        "tuple-service": "tally-tuples",
        "execution": "tally-execution",
    }
    for component, bucket in buckets.items():
        (statement,) = json.loads(policies[f"{component}.json"])["Statement"]
        assert statement["Resource"] == [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"]
        assert not any(a in statement["Action"] for a in ("s3:*", "admin:*"))
    job = objects(docs, "Job")["p0-tally-minio-users"]
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
    # given keys of one's own are used as given, and make no user
    own = render(
        {"s3Users": {"execution": "my-exec-s3"}, "operator": {"workerEnvSecret": "my-workers"}}
    )
    assert _s3_secrets(own)["p0-tally-execution"] == {"my-exec-s3"}
    assert "p0-tally-s3-execution" not in objects(own, "Secret")
    assert "p0-tally-worker-s3" not in objects(own, "Secret")
    assert "execution.json" not in objects(own, "ConfigMap")["p0-tally-minio-users"]["data"]
