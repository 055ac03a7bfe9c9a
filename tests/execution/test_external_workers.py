"""External workers: the execution services run with ``TALLY_EXECUTION_WORKERS=external``
and the test plays Kubernetes.

Three parties' execution services are processes on loopback (mutual TLS).  The job is
submitted as the operator submits it (``AnalyticsJobSpec.execution_request``), and the
worker "pods" are started with the command and environment that the operator's pure
builder puts in the worker Job (``build_worker_job``): ``valueFrom`` fields resolved as
the kubelet would, ``envFrom`` as the party's settings, ``TMPDIR`` a fresh directory
per pod (an ``emptyDir`` on whatever node).  The blob directory of each party is shared
by its service and its pods, as the party's S3 bucket is in a cluster.  One pod is
SIGKILLed mid-job and a new pod with the same environment (a new name, an empty disk)
replaces it: the job succeeds with pandas' result and ``restarts`` counts the pod.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from tally.execution.ledger import TupleLedger
from tally.execution.pod import partition_from_env
from tally.execution.results import combine_results
from tally.execution.worker import FAILED_EXIT
from tally.mpc.table import share_table
from tally_operator.builders.job import (
    Owner,
    WorkerTemplate,
    build_worker_job,
    worker_secret_name,
)
from tally_operator.builders.scheduling import Placement
from tally_operator.consortium import Consortium, parse_consortium_spec
from tally_operator.resources import COMPLETION_INDEX_ANNOTATION, CONSORTIUM_FILE
from tally_operator.settings import (
    DEFAULT_SPOT_NODE_LABELS,
    DEFAULT_SPOT_TOLERATIONS,
    OperatorConfig,
)
from tally_operator.spec import AnalyticsJobSpec, SpecLimits, parse_analytics_job_spec
from tests.execution.cluster import TOKENS, Cluster
from tests.execution.deployment import Deployment, service_token
from tests.execution.test_jobs import GROUPBY, SPECS, _check_groupby, _events

WORKER_TOKEN = "worker-token-of-this-party"
JOB = "ext-groupby"


def _tokens() -> str:
    tokens: list[dict[str, Any]] = [
        {"identity": who, "token": token} for who, token in TOKENS.items()
    ]
    tokens.append({"identity": "execution-worker", "token": WORKER_TOKEN, "service": True})
    return json.dumps(tokens)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    external = {
        "TALLY_EXECUTION_WORKERS": "external",
        "TALLY_EXECUTION_TOKENS": _tokens(),
        "TALLY_EXECUTION_WORKER_START_TIMEOUT_S": "6",
    }
    cluster = Cluster(
        tmp_path_factory.mktemp("external"),
        accept_timeout=10.0,
        extra_env={p: dict(external) for p in range(3)},
    )
    cluster.start()
    data, valid = _events(2000, seed=7)
    shares = share_table(data, SPECS, 3, valid=valid)
    cluster.put("events", [[s] for s in shares], SPECS, owner="alice")
    cluster.data = (data, valid)  # type: ignore[attr-defined]
    yield cluster
    cluster.stop()


class Kubelet:
    """Starts worker pods from the operator's Job manifest, one process per pod."""

    def __init__(self, cluster: Cluster, spec: AnalyticsJobSpec) -> None:
        self.cluster = cluster
        self.spec = spec
        self.pods: dict[str, subprocess.Popen[bytes]] = {}
        self.dirs: dict[str, Path] = {}
        self.jobs = [self._job(party) for party in range(cluster.parties)]
        # the worker Secret the operator creates: each party's worker token for this job
        self.worker_tokens = [self._worker_token(party) for party in range(cluster.parties)]

    def _worker_token(self, party: int) -> str:
        issued = httpx.post(
            self.cluster.url(party, f"/v1/internal/jobs/{self.spec.job_id}/worker-token"),
            headers={"Authorization": f"Bearer {WORKER_TOKEN}"},
            timeout=10,
        )
        assert issued.status_code == 201, issued.text
        token: str = issued.json()["token"]
        assert token.startswith("twrk_")
        return token

    def _job(self, party: int) -> dict[str, Any]:
        defaults = OperatorConfig.__dataclass_fields__["worker_command"].default
        template = WorkerTemplate(
            image="tally:test",
            command=defaults,  # type: ignore[arg-type]
            party_id=f"party-{party}",
            execution_url=self.cluster.url(party, ""),
            service_account="tally-worker",
            resources={},
            backoff_limit=3,
            ttl_seconds=600,
            spot_tolerations=DEFAULT_SPOT_TOLERATIONS,
            spot_node_labels=DEFAULT_SPOT_NODE_LABELS,
            env_configmap="tally-worker-env",
            env_secret="tally-worker-secrets",
        )
        owner = Owner(name=JOB, namespace="tally", uid=f"uid-{party}")
        return build_worker_job(
            owner=owner,
            spec=self.spec,
            placement=Placement(zone="zone-a", spot=True),
            template=template,
        )

    def _env(
        self, party: int, index: int, pod: str, container: Mapping[str, Any]
    ) -> dict[str, str]:
        # envFrom: the party's settings (the worker-env ConfigMap and the worker Secret)
        env = {k: v for k, v in self.cluster.env(party).items() if k != "TALLY_EXECUTION_STATE_DIR"}
        env["TALLY_EXECUTION_BLOB_DIR"] = str(self.cluster.state_dir(party) / "blobs")  # "S3"
        # the worker Secret holds no secret-store or tuple-service credential: the job's own
        # come with the attach
        env.pop("TALLY_EXECUTION_SECRET_STORE_TOKEN", None)
        env.pop("TALLY_EXECUTION_TUPLES_TOKEN", None)
        env.pop("TALLY_EXECUTION_TOKENS", None)  # the service's, not in the worker env
        fields = {
            f"metadata.annotations['{COMPLETION_INDEX_ANNOTATION}']": str(index),
            "metadata.name": pod,
            "spec.nodeName": f"node-of-{pod}",
            "status.podIP": "127.0.0.1",
        }
        secret = worker_secret_name(JOB)
        for item in container["env"]:
            if "value" in item:
                env[item["name"]] = item["value"]
            elif "secretKeyRef" in item["valueFrom"]:
                assert item["valueFrom"]["secretKeyRef"] == {"name": secret, "key": "token"}
                env[item["name"]] = self.worker_tokens[party]
            else:
                env[item["name"]] = fields[item["valueFrom"]["fieldRef"]["fieldPath"]]
        env["JOB_COMPLETION_INDEX"] = str(index)  # Kubernetes sets it in Indexed Jobs
        env["TMPDIR"] = str(self.dirs[pod])  # the pod's emptyDir at /tmp
        # the consortium volume: the document the operator renders, and no PEERS (the chart's
        # worker-env ConfigMap no longer sets them)
        del env["TALLY_EXECUTION_PEERS"]
        document = self.dirs[pod] / CONSORTIUM_FILE
        document.write_text(json.dumps(self._consortium(party).document()))
        assert env["TALLY_CONSORTIUM_FILE"].endswith("/" + CONSORTIUM_FILE)
        env["TALLY_CONSORTIUM_FILE"] = str(document)
        return env

    def _consortium(self, party: int) -> Consortium:
        parties = [
            {"id": f"party-{i}", "index": i, "endpoints": {"partyLink": address}}
            for i, address in enumerate(self.cluster.control)
        ]
        return parse_consortium_spec({"localParty": f"party-{party}", "parties": parties})

    def start(self, party: int, index: int = 0) -> str:
        job = self.jobs[party]
        pod = f"{job['metadata']['name']}-{index}-{random.randrange(16**5):05x}"
        self.dirs[pod] = self.cluster.root / "pods" / f"p{party}" / pod
        self.dirs[pod].mkdir(parents=True)
        (container,) = job["spec"]["template"]["spec"]["containers"]
        command = list(container["command"])
        if command[0] == "python":
            command[0] = sys.executable
        log = (self.dirs[pod] / "pod.log").open("ab")
        self.pods[pod] = subprocess.Popen(
            command,
            env=self._env(party, index, pod, container),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        return pod

    def log(self, pod: str) -> str:
        return (self.dirs[pod] / "pod.log").read_text()[-3000:]

    def stop(self) -> None:
        for process in self.pods.values():
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)


def _spec() -> AnalyticsJobSpec:
    body = {
        "program": "groupby",
        "inputs": [{"name": "events", "dataset": "events"}],
        "params": GROUPBY,
        "outputs": [{"name": "result", "kind": "open", "recipients": ["alice"]}],
        "partitions": 1,
        "scheduling": {"spot": True, "maxRestarts": 3},
        "credentials": {"secretRef": {"name": "alice-token"}},
    }
    return parse_analytics_job_spec(body, name=JOB, limits=SpecLimits())


def test_operator_pods_run_the_job_and_a_replaced_pod_resumes(cluster: Cluster) -> None:
    spec = _spec()
    # as the operator submits it: with alice's own token, from her Secret
    responses = cluster.submit(spec.execution_request())
    assert [r.status_code for r in responses] == [201, 201, 201], [r.text for r in responses]
    # the services scope the name to alice; the operator builds the workers with that id
    job_id = responses[0].json()["id"]
    assert job_id == cluster.job_id(JOB) and {r.json()["id"] for r in responses} == {job_id}
    spec = dataclasses.replace(spec, job_id=job_id)
    # the intra-party routes take the service credential only
    refused = cluster.request(
        0, "POST", f"/v1/internal/jobs/{job_id}/workers/0/attach", json={"pod": "x"}
    )
    assert refused.status_code == 403

    kubelet = Kubelet(cluster, spec)
    try:
        _check_worker_token_scope(cluster, kubelet, job_id)
        (container,) = kubelet.jobs[0]["spec"]["template"]["spec"]["containers"]
        assert container["command"][-1] == "tally.execution.pod"
        first = {party: kubelet.start(party) for party in range(3)}
        states = cluster.wait(JOB, phases=("Running",), timeout=30)
        total = states[0]["stages_total"]
        target = random.Random().randint(2, total - 3)
        deadline = time.monotonic() + 45
        while True:  # SIGKILL party 1's pod mid-job (its node was preempted)
            status = cluster.worker_status(1, JOB)
            if status.get("stage", 0) >= target and status.get("phase") == "Running":
                kubelet.pods[first[1]].send_signal(signal.SIGKILL)
                break
            assert kubelet.pods[first[1]].poll() is None, kubelet.log(first[1])
            assert time.monotonic() < deadline, (status, kubelet.log(first[1]))
            time.sleep(0.01)
        kubelet.pods[first[1]].wait(timeout=10)
        replacement = kubelet.start(1)  # the Job controller's new pod, on another node

        states = cluster.wait(JOB, timeout=60)
        logs = {pod: kubelet.log(pod) for pod in kubelet.pods}
        assert [s["phase"] for s in states] == ["Succeeded"] * 3, (target, states, logs)
        assert [s["restarts"] for s in states] == [0, 1, 0]
        for pod, process in kubelet.pods.items():
            if pod != first[1]:
                assert process.wait(timeout=15) == 0, logs[pod]
    finally:
        kubelet.stop()

    responses = [cluster.request(p, "GET", f"/v1/jobs/{JOB}/result") for p in range(3)]
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    data, valid = cluster.data  # type: ignore[attr-defined]
    _check_groupby(
        combine_results([r.json() for r in responses])["result"], pd.DataFrame(data)[valid == 1]
    )
    # a pod that no longer holds its partition is told so
    stale = httpx.put(
        cluster.url(1, f"/v1/internal/jobs/{job_id}/workers/0"),
        json={"pod": first[1], "phase": "Running"},
        headers={"Authorization": f"Bearer {WORKER_TOKEN}"},
        timeout=10,
    )
    assert stale.status_code == 409 and stale.json()["error"] == "superseded"
    status = cluster.worker_status(1, JOB)
    assert status["pod"] == replacement and status["generation"] == 1
    assert status["resumed_from"] and status["resumed_from"][-1] >= target - 1, (target, status)
    # the new pod started on an empty disk: it learnt the epochs used before from the
    # blob store and drew only from a later one
    old = TupleLedger(kubelet.dirs[first[1]] / "tally-worker", job_id, 0)
    new = TupleLedger(kubelet.dirs[replacement] / "tally-worker", job_id, 0)
    assert old.epochs() == [0] and 0 in new.epochs(), (old.epochs(), new.epochs())
    assert new.entries() and min(e["epoch"] for e in new.entries()) >= 1
    used = [(e["epoch"], e["batch"]) for e in old.entries() + new.entries()]
    assert len(used) == len(set(used)), "party 1 consumed a tuple twice"


def _check_worker_token_scope(cluster: Cluster, kubelet: Kubelet, job_id: str) -> None:
    """Regression (issue 14): every pod held the party's service credential, which
    attaches to any job and so gets any running job's secret-store and tuple-service
    credentials.  A pod's token now reaches its own job's worker routes only."""
    headers = {"Authorization": f"Bearer {kubelet.worker_tokens[0]}"}
    other = cluster.submit({**_spec().execution_request(), "id": "ext-other-job"})
    assert [r.status_code for r in other] == [201] * 3, [r.text for r in other]
    other_id = other[0].json()["id"]
    for method, path in [
        ("POST", f"/v1/internal/jobs/{other_id}/workers/0/attach"),
        ("PUT", f"/v1/internal/jobs/{other_id}/workers/0"),
        ("POST", f"/v1/internal/jobs/{job_id}/worker-token"),
        ("GET", f"/v1/jobs/{job_id}"),
        ("GET", f"/v1/jobs/{job_id}/result"),
        ("DELETE", f"/v1/jobs/{other_id}"),
        ("POST", "/v1/jobs"),
    ]:
        reply = httpx.request(
            method, cluster.url(0, path), headers=headers, json={"pod": "x"}, timeout=10
        )
        assert reply.status_code == 403, (method, path, reply.text)
        assert reply.json()["error"] == "out_of_scope"
    assert cluster.request(0, "DELETE", f"/v1/jobs/{other_id}").status_code in (200, 202)
    forged = httpx.post(
        cluster.url(0, f"/v1/internal/jobs/{job_id}/workers/0/attach"),
        headers={"Authorization": "Bearer twrk_forged"},
        json={"pod": "x"},
        timeout=10,
    )
    assert forged.status_code == 401


def test_a_job_whose_pods_never_come_fails_with_a_clear_reason(cluster: Cluster) -> None:
    spec = _spec().execution_request()
    spec["id"] = "ext-no-pods"
    assert [r.status_code for r in cluster.submit(spec)] == [201, 201, 201]
    states = cluster.wait("ext-no-pods", timeout=40)
    assert [s["phase"] for s in states] == ["Failed"] * 3, states
    assert all("no worker attached" in s["reason"] for s in states), states


def test_partition_comes_from_tally_partition_or_the_completion_index() -> None:
    assert partition_from_env({"TALLY_PARTITION": "2", "JOB_COMPLETION_INDEX": "2"}) == 2
    assert partition_from_env({"TALLY_PARTITION": "", "JOB_COMPLETION_INDEX": "5"}) == 5
    with pytest.raises(ValueError, match="JOB_COMPLETION_INDEX"):
        partition_from_env({})
    with pytest.raises(ValueError, match="not a partition index"):
        partition_from_env({"TALLY_PARTITION": "-1"})


def test_a_pod_without_its_service_settings_fails_for_good(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TALLY_")}
    env.update(TALLY_JOB_ID="j", TALLY_PARTITION="0", TMPDIR=str(tmp_path))
    done = subprocess.run(
        [sys.executable, "-m", "tally.execution.worker", "--external"],
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == FAILED_EXIT
    assert b"TALLY_EXECUTION_WORKER_TOKEN" in done.stderr


def test_pods_read_secret_store_inputs_with_the_job_token_only(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Issue 14 item 3, for pods: with inputs in the secret-stores and tuples from the
    tuple-services, a pod's only credential at either is its job's token, handed over with
    the attach; both are revoked with the job."""
    external = {
        "TALLY_EXECUTION_WORKERS": "external",
        "TALLY_EXECUTION_TOKENS": _tokens(),
        "TALLY_EXECUTION_WORKER_START_TIMEOUT_S": "20",
    }
    deployment = Deployment(tmp_path_factory.mktemp("ext-wired"), execution_env=external)
    deployment.start()
    kubelet: Kubelet | None = None
    try:
        data, valid = _events(1200, seed=11)
        shares = share_table(data, SPECS, 3, valid=valid)
        dataset = deployment.upload("events", shares, SPECS, owner="alice")
        body = {
            "program": "groupby",
            "inputs": [{"name": "events", "dataset": dataset}],
            "params": GROUPBY,
            "outputs": [{"name": "result", "kind": "shares", "recipients": ["alice"]}],
            "partitions": 1,
            "credentials": {"secretRef": {"name": "alice-token"}},
        }
        spec = parse_analytics_job_spec(body, name="ext-wired", limits=SpecLimits())
        responses = deployment.execution.submit(spec.execution_request())
        assert [r.status_code for r in responses] == [201] * 3, [r.text for r in responses]
        job_id = responses[0].json()["id"]
        spec = dataclasses.replace(spec, job_id=job_id)
        kubelet = Kubelet(deployment.execution, spec)
        pods = [kubelet.start(party) for party in range(3)]
        for party, pod in enumerate(pods):
            container = kubelet.jobs[party]["spec"]["template"]["spec"]["containers"][0]
            env = kubelet._env(party, 0, pod, container)
            assert "TALLY_EXECUTION_SECRET_STORE_TOKEN" not in env
            assert "TALLY_EXECUTION_TUPLES_TOKEN" not in env
            assert service_token(party) not in json.dumps(env)
            assert deployment.tuples.token(party) not in json.dumps(env)
            assert WORKER_TOKEN not in json.dumps(env)  # the job's worker token only
            assert env["TALLY_EXECUTION_WORKER_TOKEN"] == kubelet.worker_tokens[party]
        states = deployment.execution.wait("ext-wired", timeout=90)
        logs = {pod: kubelet.log(pod) for pod in pods}
        assert [s["phase"] for s in states] == ["Succeeded"] * 3, (states, logs)
        for pod in pods:
            assert kubelet.pods[pod].wait(timeout=15) == 0, logs[pod]
        (result,) = {s["results"]["result"][0] for s in states}
        _check_groupby(deployment.open_result(result, "alice"), pd.DataFrame(data)[valid == 1])
        # the job's token is revoked at every party, and an attach hands out none now
        for party in range(3):
            database = deployment.root / f"store{party}" / "metadata.db"
            with sqlite3.connect(database) as connection:
                rows = connection.execute(
                    "SELECT revoked_at FROM job_tokens WHERE job_id = ?", (job_id,)
                ).fetchall()
            assert len(rows) == 1 and rows[0][0] is not None, (party, rows)
            index = deployment.root / "tuples" / f"party{party}" / "index.db"
            with sqlite3.connect(index) as connection:
                rows = connection.execute(
                    "SELECT revoked_at FROM tuple_job_tokens WHERE job_id = ?", (job_id,)
                ).fetchall()
            assert len(rows) == 1 and rows[0][0] is not None, (party, rows)
            attach = httpx.post(
                deployment.execution.url(party, f"/v1/internal/jobs/{job_id}/workers/0/attach"),
                json={"pod": "late"},
                headers={"Authorization": f"Bearer {WORKER_TOKEN}"},
                timeout=10,
            )
            assert attach.status_code == 200 and attach.json()["inputs_token"] is None
            assert attach.json()["tuples_token"] is None
        for text in logs.values():
            assert "tjob_" not in text
    finally:
        if kubelet is not None:
            kubelet.stop()
        deployment.stop()
