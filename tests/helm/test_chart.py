"""The Helm chart helm/tally, rendered offline with helm-python-sdk (no helm binary).

For the default values and three other value sets: ``helm lint --strict`` is clean,
every rendered manifest passes kubernetes-validate in strict mode (unknown fields are
errors), custom resources match their CRD's OpenAPI schema (jsonschema), and the
security-relevant parts (RBAC, NetworkPolicy, placement, pod security) say what
docs/kubernetes.md promises. The operator's environment as rendered is parsed by the
operator's own configuration loader, so the chart and the operator cannot drift.
"""

from __future__ import annotations

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
        for container in pod["containers"]:
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
    # Secrets: get only (the analyst credentials an AnalyticsJob names), never list/watch
    assert {v for _, r, v in granted if r == "secrets"} == {"get"}
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
    (workers,) = _ingress_rules(docs, "p0-tally-workers")
    assert workers["from"] == peers


def test_without_peers_nothing_reaches_partylink() -> None:
    docs = render({})
    assert _ingress_rules(docs, "p0-tally-workers") == []
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
    assert json.loads(exec_env["TALLY_EXECUTION_PEERS"]) == [
        f"tally-{i}.example.org:7100" for i in range(3)
    ]
    assert exec_env["TALLY_EXECUTION_TLS_CERT"] == "/etc/tally/tls/tls.crt"
    (consortium,) = objects(docs, "Consortium").values()
    assert consortium["spec"]["localParty"] == "party-0"
    assert len(consortium["spec"]["parties"]) == 3


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
