"""Pure manifest builders: the worker Job, placement, status conditions, ConfigMap."""

from __future__ import annotations

import json

from tally_operator.builders.job import (
    MAX_JOB_NAME,
    Owner,
    WorkerTemplate,
    build_worker_job,
    pod_failure_policy,
    worker_job_name,
)
from tally_operator.builders.scheduling import Placement, node_affinity, tolerations
from tally_operator.builders.status import (
    ConditionType,
    condition,
    merge_conditions,
    progress_text,
)
from tally_operator.consortium import build_consortium_configmap, parse_consortium_spec
from tally_operator.settings import DEFAULT_SPOT_NODE_LABELS, DEFAULT_SPOT_TOLERATIONS
from tally_operator.spec import SpecLimits, parse_analytics_job_spec

ZONE = "topology.kubernetes.io/zone"


def template(**overrides: object) -> WorkerTemplate:
    values: dict[str, object] = {
        "image": "tally:1",
        "command": ["python", "-m", "tally.execution.pod"],
        "party_id": "p0",
        "execution_url": "http://execution:8000",
        "service_account": "tally-worker",
        "resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "4Gi"}},
        "backoff_limit": 3,
        "ttl_seconds": 600,
        "spot_tolerations": DEFAULT_SPOT_TOLERATIONS,
        "spot_node_labels": DEFAULT_SPOT_NODE_LABELS,
    }
    values.update(overrides)
    return WorkerTemplate(**values)  # type: ignore[arg-type]


def job_spec(**spec: object):  # type: ignore[no-untyped-def]
    body: dict[str, object] = {
        "program": "groupby",
        "inputs": [{"name": "views", "dataset": "ds"}],
        "outputs": [{"name": "totals", "recipients": ["alice"]}],
        "partitions": 4,
        "credentials": {"secretRef": {"name": "analyst-token"}},
    }
    body.update(spec)
    return parse_analytics_job_spec(body, name="sales", limits=SpecLimits())


def test_spot_job_tolerates_and_prefers_spot_nodes_in_its_zone() -> None:
    placement = Placement(zone="eu-1a", spot=True)
    affinity = node_affinity(placement, DEFAULT_SPOT_NODE_LABELS)["nodeAffinity"]
    required = affinity["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert required == [
        {"matchExpressions": [{"key": ZONE, "operator": "In", "values": ["eu-1a"]}]}
    ]
    preferred = affinity["preferredDuringSchedulingIgnoredDuringExecution"]
    assert len(preferred) == len(DEFAULT_SPOT_NODE_LABELS) == 5
    assert all(p["weight"] == 100 for p in preferred)
    assert tolerations(placement, DEFAULT_SPOT_TOLERATIONS) == [
        dict(t) for t in DEFAULT_SPOT_TOLERATIONS
    ]


def test_job_without_spot_is_kept_off_spot_nodes_even_untainted_ones() -> None:
    placement = Placement(zone="eu-1a", spot=False)
    affinity = node_affinity(placement, DEFAULT_SPOT_NODE_LABELS)["nodeAffinity"]
    (term,) = affinity["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    expressions = term["matchExpressions"]
    assert expressions[0]["key"] == ZONE
    assert {(e["key"], e["operator"]) for e in expressions[1:]} == {
        (key, "NotIn") for key, _ in DEFAULT_SPOT_NODE_LABELS
    }
    assert "preferredDuringSchedulingIgnoredDuringExecution" not in affinity
    assert tolerations(placement, DEFAULT_SPOT_TOLERATIONS) == []


def test_no_zone_and_spot_allowed_has_only_preferences() -> None:
    affinity = node_affinity(Placement(zone=None, spot=True), DEFAULT_SPOT_NODE_LABELS)
    assert set(affinity["nodeAffinity"]) == {"preferredDuringSchedulingIgnoredDuringExecution"}
    assert node_affinity(Placement(zone=None, spot=True), []) == {}


def test_worker_job_is_indexed_one_pod_per_partition_and_owned() -> None:
    owner = Owner(name="sales", namespace="tally", uid="uid-1")
    job = build_worker_job(
        owner=owner,
        spec=job_spec(scheduling={"spot": True}),
        placement=Placement(zone="z", spot=True),
        template=template(priority_class="tally-batch", env_secret="tally-s3"),
    )
    assert job["apiVersion"] == "batch/v1" and job["kind"] == "Job"
    spec = job["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 4, 4)
    assert spec["podFailurePolicy"] == pod_failure_policy()
    assert spec["backoffLimit"] == 3 and spec["ttlSecondsAfterFinished"] == 600
    (ref,) = job["metadata"]["ownerReferences"]
    assert ref == {
        "apiVersion": "tally.dev/v1alpha1",
        "kind": "AnalyticsJob",
        "name": "sales",
        "uid": "uid-1",
        "controller": True,
        "blockOwnerDeletion": True,
    }
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["automountServiceAccountToken"] is False
    assert pod["priorityClassName"] == "tally-batch"
    (container,) = pod["containers"]
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert {"secretRef": {"name": "tally-s3"}} in container["envFrom"]
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert "/tmp" in mounts  # the root filesystem is read-only
    assert spec["template"]["metadata"]["labels"]["tally.dev/analyticsjob"] == "sales"


def test_pod_failure_policy_ignores_disruption_and_fails_fast_on_permanent_errors() -> None:
    ignore, fail = pod_failure_policy()["rules"]
    assert ignore["action"] == "Ignore"
    assert ignore["onPodConditions"] == [{"type": "DisruptionTarget", "status": "True"}]
    assert fail["action"] == "FailJob" and fail["onExitCodes"]["containerName"] == "worker"


def test_job_resources_override_the_defaults_key_by_key() -> None:
    job = build_worker_job(
        owner=Owner("a", "ns", "u"),
        spec=job_spec(resources={"limits": {"memory": "16Gi", "cpu": "4"}}),
        placement=Placement(zone=None, spot=False),
        template=template(),
    )
    resources = job["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert resources == {
        "requests": {"cpu": "1", "memory": "2Gi"},
        "limits": {"memory": "16Gi", "cpu": "4"},
    }


def test_worker_job_names_fit_pod_hostnames() -> None:
    assert worker_job_name("sales") == "sales-workers"
    long = worker_job_name("x" * 63)
    assert len(long) <= MAX_JOB_NAME and long != worker_job_name("x" * 62)


def test_conditions_keep_transition_time_while_status_holds() -> None:
    first = condition(ConditionType.VALID, True, "SpecValid", "ok", now="t1")
    again = condition(ConditionType.VALID, True, "SpecValid", "still ok", now="t2")
    flipped = condition(ConditionType.VALID, False, "InvalidSpec", "bad", now="t3")
    (kept,) = merge_conditions([first], [again])
    assert kept["lastTransitionTime"] == "t1" and kept["message"] == "still ok"
    (moved,) = merge_conditions([kept], [flipped])
    assert moved["lastTransitionTime"] == "t3" and moved["status"] == "False"
    assert progress_text(2, 5) == "2/5" and progress_text(0, 0) == "-"


def test_consortium_configmap_holds_the_parties_document() -> None:
    consortium = parse_consortium_spec(
        {
            "localParty": "b",
            "parties": [
                {"id": "b", "index": 1, "endpoints": {"partyLink": "b.example:7100"}},
                {
                    "id": "a",
                    "index": 0,
                    "endpoints": {"partyLink": "a.example:7100"},
                    "tls": {"secretName": "a-tls"},
                },
            ],
        }
    )
    configmap = build_consortium_configmap(name="c", namespace="ns", uid="u", consortium=consortium)
    assert configmap["metadata"]["name"] == "c-parties"
    document = json.loads(configmap["data"]["consortium.json"])
    assert document["localParty"] == "b" and document["tupleGenerator"] == "ot"
    assert [p["id"] for p in document["parties"]] == ["a", "b"]  # by index
    assert document["parties"][0]["tlsSecret"] == "a-tls"
