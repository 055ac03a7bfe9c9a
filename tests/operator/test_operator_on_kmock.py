"""The real kopf operator against kmock's API server (see harness.py), end to end.

Each scenario starts the operator with its real registrations, its own login (a
kubeconfig pointing at the mock), a fake execution service and a simulated Job
controller, then drives the cluster the way Kubernetes and a user would.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tally.common.consortium import parse_consortium
from tests.operator.harness import (
    AJ,
    ANALYST_TOKEN,
    CONFIGMAPS,
    CONSORTIA,
    JOBS,
    NAMESPACE,
    NODES,
    PODS,
    SECRETS,
    Cluster,
    eventually,
    run_scenario,
    running_operator,
)

ZONE_LABEL = "topology.kubernetes.io/zone"


def analytics_job(name: str = "sales", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "program": "groupby",
        "inputs": [{"name": "views", "dataset": "ds-views"}],
        "params": {"keys": ["region"], "agg": {"total": ["views", "sum"]}},
        "outputs": [{"name": "totals", "kind": "open", "recipients": ["alice"]}],
        "partitions": 2,
        "scheduling": {"spot": True, "maxRestarts": 2},
        "credentials": {"secretRef": {"name": "analyst-credentials"}},
    }
    body.update(spec)
    return {
        "apiVersion": "tally.dev/v1alpha1",
        "kind": "AnalyticsJob",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": body,
    }


def status_of(cluster: Cluster, name: str = "sales") -> dict[str, Any]:
    return (cluster.analytics_job(name) or {}).get("status", {})


async def secret_store_on_node(cluster: Cluster, zone: str) -> None:
    """A running secret-store pod on a node in ``zone``: the default zone of jobs."""
    await cluster.api.create(
        NODES, {"metadata": {"name": "node-storage", "labels": {ZONE_LABEL: zone}}}
    )
    await cluster.api.create(
        PODS,
        {
            "metadata": {
                "name": "tally-secret-store-0",
                "namespace": NAMESPACE,
                "labels": {"app.kubernetes.io/component": "secret-store"},
            },
            "spec": {"nodeName": "node-storage", "containers": []},
            "status": {"phase": "Running"},
        },
    )


async def running(cluster: Cluster, name: str = "sales") -> dict[str, Any]:
    return await eventually(
        lambda: (
            status_of(cluster, name) if status_of(cluster, name).get("phase") == "Running" else None
        ),
        what=f"{name} to be Running",
    )


async def preempt(cluster: Cluster, pod: dict[str, Any]) -> None:
    """What Kubernetes does to a pod on a preempted spot node: DisruptionTarget, then gone."""
    name = pod["metadata"]["name"]
    condition = {
        "type": "DisruptionTarget",
        "status": "True",
        "reason": "TerminationByKubelet",
        "message": "Pod was terminated in response to imminent node shutdown.",
    }
    await cluster.api.patch(
        PODS,
        NAMESPACE,
        name,
        {"status": {"phase": "Failed", "conditions": [condition]}},
        status=True,
    )
    await cluster.api.delete(PODS, NAMESPACE, name)


def test_create_makes_a_zone_pinned_spot_worker_job_and_reports_running(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_operator(tmp_path) as cluster:
            await secret_store_on_node(cluster, "europe-west1-b")
            await cluster.api.create(AJ, analytics_job())
            status = await running(cluster)

            assert status["zone"] == "europe-west1-b"
            assert status["zoneSource"] == "secret-store"
            assert status["jobId"] == "sales" and status["restarts"] == 0
            assert status["progress"] == "0/4"
            conditions = {c["type"]: c for c in status["conditions"]}
            assert conditions["Valid"]["status"] == "True"
            assert conditions["WorkersCreated"]["status"] == "True"

            (job,) = cluster.api.list(JOBS, NAMESPACE)
            spec = job["spec"]
            assert job["metadata"]["name"] == "sales-workers"
            assert job["metadata"]["ownerReferences"][0]["kind"] == "AnalyticsJob"
            assert spec["completionMode"] == "Indexed"
            assert spec["completions"] == spec["parallelism"] == 2
            rules = spec["podFailurePolicy"]["rules"]
            assert rules[0] == {
                "action": "Ignore",
                "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
            }
            pod = spec["template"]["spec"]
            required = pod["affinity"]["nodeAffinity"][
                "requiredDuringSchedulingIgnoredDuringExecution"
            ]
            assert required["nodeSelectorTerms"][0]["matchExpressions"] == [
                {"key": ZONE_LABEL, "operator": "In", "values": ["europe-west1-b"]}
            ]
            preferred = pod["affinity"]["nodeAffinity"][
                "preferredDuringSchedulingIgnoredDuringExecution"
            ]
            assert {p["preference"]["matchExpressions"][0]["key"] for p in preferred} == {
                "cloud.google.com/gke-spot",
                "kubernetes.azure.com/scalesetpriority",
                "eks.amazonaws.com/capacityType",
                "karpenter.sh/capacity-type",  # before, Karpenter and GKE preemptible
                "cloud.google.com/gke-preemptible",  # nodes were missing (regression)
            }
            assert {(t["key"], t["value"]) for t in pod["tolerations"]} == {
                ("cloud.google.com/gke-spot", "true"),
                ("kubernetes.azure.com/scalesetpriority", "spot"),
                ("eks.amazonaws.com/capacityType", "SPOT"),
                ("cloud.google.com/gke-preemptible", "true"),
            }
            env = {e["name"]: e for e in pod["containers"][0]["env"]}
            assert env["TALLY_JOB_ID"]["value"] == "sales"
            assert env["TALLY_RESUME"]["value"] == "true"
            assert env["TALLY_ZONE"]["value"] == "europe-west1-b"
            assert (
                "job-completion-index"
                in env["TALLY_PARTITION"]["valueFrom"]["fieldRef"]["fieldPath"]
            )
            container = pod["containers"][0]["securityContext"]
            assert container["readOnlyRootFilesystem"] and pod["securityContext"]["runAsNonRoot"]
            # the pods' credential at the execution service is the job's own worker token,
            # from a Secret the AnalyticsJob owns (before: the party's service credential
            # in every pod, which attaches to any job)
            assert env["TALLY_EXECUTION_WORKER_TOKEN"]["valueFrom"] == {
                "secretKeyRef": {"name": "sales-workers-credentials", "key": "token"}
            }
            assert cluster.execution.worker_tokens == ["sales"]
            (secret,) = [
                s
                for s in cluster.api.list(SECRETS, NAMESPACE)
                if s["metadata"]["name"] == "sales-workers-credentials"
            ]
            assert secret["metadata"]["ownerReferences"][0]["kind"] == "AnalyticsJob"
            assert secret["stringData"] == {"token": "twrk_fake-sales"}
            assert "twrk_fake-sales" not in str(cluster.analytics_job("sales"))
            assert "twrk_fake-sales" not in str(cluster.events())

            (submitted,) = cluster.execution.submitted
            assert cluster.execution.tokens == [ANALYST_TOKEN]  # the analyst's, not the operator's
            assert ANALYST_TOKEN not in str(cluster.analytics_job("sales"))
            assert ANALYST_TOKEN not in str(cluster.events())
            assert submitted["id"] == "sales"
            assert submitted["inputs"] == {"views": "ds-views"}
            assert submitted["outputs"] == {"totals": {"kind": "open", "recipients": ["alice"]}}

            await eventually(lambda: cluster.events("Submitted"), what="a Submitted event")
            await eventually(lambda: len(cluster.jobs.pods()) == 2, what="two worker pods")

    run_scenario(scenario)


def test_preempted_worker_counts_a_restart_and_is_replaced(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_operator(tmp_path, default_zone="zone-default") as cluster:
            await cluster.api.create(AJ, analytics_job())
            status = await running(cluster)
            assert status["zone"] == "zone-default" and status["zoneSource"] == "default"
            (lost,) = await eventually(lambda: cluster.jobs.pods(index=1), what="worker 1")

            await preempt(cluster, lost)

            status = await eventually(
                lambda: status_of(cluster) if status_of(cluster).get("restarts") == 1 else None,
                what="the restart to be counted",
            )
            assert status["phase"] == "Running"
            (record,) = status["lostWorkers"]
            assert record["uid"] == lost["metadata"]["uid"]
            assert record["partition"] == 1
            assert "TerminationByKubelet" in record["reason"]
            (replacement,) = await eventually(
                lambda: cluster.jobs.pods(index=1), what="replacement"
            )
            assert replacement["metadata"]["uid"] != lost["metadata"]["uid"]
            env = {e["name"]: e.get("value") for e in replacement["spec"]["containers"][0]["env"]}
            assert env["TALLY_RESUME"] == "true"  # it resumes from the newest checkpoint
            (event,) = await eventually(lambda: cluster.events("WorkerLost"), what="WorkerLost")
            assert "restart 1 of at most 2" in event["message"]

            # The job goes on: progress is mirrored, and nobody cancelled it.
            cluster.execution.report("sales", stage=3)
            await eventually(lambda: status_of(cluster).get("progress") == "3/4", what="3/4")
            assert cluster.execution.cancelled == []
            assert status_of(cluster)["restarts"] == 1  # counted once, not per event

    run_scenario(scenario)


def test_more_restarts_than_allowed_fail_the_job(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_operator(tmp_path) as cluster:
            spec = analytics_job(scheduling={"spot": True, "maxRestarts": 1, "zone": "z1"})
            await cluster.api.create(AJ, spec)
            await running(cluster)
            for attempt in range(2):
                (pod,) = await eventually(lambda: cluster.jobs.pods(index=0), what="worker 0")
                await preempt(cluster, pod)
                await eventually(
                    lambda n=attempt + 1: status_of(cluster).get("restarts") == n,
                    what=f"restart {attempt + 1}",
                )

            status = await eventually(
                lambda: status_of(cluster) if status_of(cluster).get("phase") == "Failed" else None,
                what="the job to fail",
            )
            failed = next(c for c in status["conditions"] if c["type"] == "Failed")
            assert failed["status"] == "True" and failed["reason"] == "TooManyRestarts"
            assert "more than maxRestarts (1)" in failed["message"]
            assert status["completionTime"]
            # Cancelling at the execution service releases the tuple reservation.
            await eventually(lambda: cluster.execution.cancelled == ["sales"], what="the cancel")
            await eventually(lambda: not cluster.api.list(JOBS, NAMESPACE), what="workers gone")
            await eventually(lambda: cluster.events("TooManyRestarts"), what="a Warning event")

    run_scenario(scenario)


def test_delete_runs_the_finalizer_that_cancels_and_cleans_up(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_operator(tmp_path, default_zone="z1") as cluster:
            await cluster.api.create(AJ, analytics_job())
            await running(cluster)
            aj = cluster.analytics_job("sales")
            assert aj is not None and "tally.dev/cleanup" in aj["metadata"]["finalizers"]

            await cluster.api.delete(AJ, NAMESPACE, "sales")

            await eventually(lambda: cluster.analytics_job("sales") is None, what="deletion")
            assert cluster.execution.cancelled == ["sales"]
            assert cluster.api.list(JOBS, NAMESPACE) == []
            await eventually(lambda: cluster.events("CleanedUp"), what="a CleanedUp event")

    run_scenario(scenario)


def test_invalid_spec_is_rejected_with_a_clear_condition(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_operator(tmp_path, default_zone="z1") as cluster:
            bad = analytics_job("broken", program="Group By!", partitions=0)
            await cluster.api.create(AJ, bad)
            status = await eventually(
                lambda: (
                    status_of(cluster, "broken")
                    if status_of(cluster, "broken").get("phase") == "Failed"
                    else None
                ),
                what="the rejection",
            )
            valid = next(c for c in status["conditions"] if c["type"] == "Valid")
            assert valid["status"] == "False" and valid["reason"] == "InvalidSpec"
            assert "spec.program" in valid["message"] and "spec.partitions" in valid["message"]
            assert cluster.execution.submitted == []
            assert cluster.api.list(JOBS, NAMESPACE) == []
            await eventually(lambda: cluster.events("InvalidSpec"), what="a Warning event")

    run_scenario(scenario)


def test_a_job_waits_for_its_consortium(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_operator(tmp_path, with_consortium=False, default_zone="z1") as cluster:
            await cluster.api.create(AJ, analytics_job())
            status = await eventually(
                lambda: status_of(cluster) if status_of(cluster).get("message") else None,
                what="the waiting message",
            )
            assert status["phase"] == "Pending"
            submitted = next(c for c in status["conditions"] if c["type"] == "Submitted")
            assert submitted["reason"] == "WaitingForConsortium"
            assert "tally-parties" in submitted["message"]
            assert cluster.execution.submitted == [] and cluster.api.list(JOBS, NAMESPACE) == []

    run_scenario(scenario)


def test_success_is_mirrored_with_results(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_operator(tmp_path, default_zone="z1") as cluster:
            await cluster.api.create(AJ, analytics_job())
            await running(cluster)
            cluster.execution.report(
                "sales", phase="Succeeded", stage=4, results={"totals": ("ds-r0", "ds-r1")}
            )
            status = await eventually(
                lambda: (
                    status_of(cluster) if status_of(cluster).get("phase") == "Succeeded" else None
                ),
                what="success",
            )
            assert status["progress"] == "4/4"
            assert status["results"] == [{"output": "totals", "datasets": ["ds-r0", "ds-r1"]}]
            assert status["completionTime"]
            await eventually(lambda: cluster.events("Succeeded"), what="a Succeeded event")

    run_scenario(scenario)


def test_consortium_is_rendered_into_the_parties_configmap(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_operator(tmp_path, with_consortium=False) as cluster:
            parties = [
                {"id": f"p{i}", "index": i, "endpoints": {"partyLink": f"p{i}.example:7100"}}
                for i in range(3)
            ]
            await cluster.api.create(
                CONSORTIA,
                {
                    "metadata": {"name": "tally", "namespace": NAMESPACE},
                    "spec": {"localParty": "p1", "parties": parties},
                },
            )
            configmap = await eventually(
                lambda: cluster.api.get(CONFIGMAPS, NAMESPACE, "tally-parties"), what="ConfigMap"
            )
            assert '"localParty": "p1"' in configmap["data"]["consortium.json"]
            status = await eventually(
                lambda: (cluster.api.get(CONSORTIA, NAMESPACE, "tally") or {}).get("status"),
                what="consortium status",
            )
            assert status["phase"] == "Ready" and status["parties"] == 3
            assert status["localIndex"] == 1

            # Issue 17 item 6: an edit of the Consortium reaches what the services read.
            parties[2]["endpoints"] = {"partyLink": "p2-moved.example:7443"}
            await cluster.api.patch(CONSORTIA, NAMESPACE, "tally", {"spec": {"parties": parties}})

            def moved() -> list[str] | None:
                configmap = cluster.api.get(CONFIGMAPS, NAMESPACE, "tally-parties") or {}
                text = (configmap.get("data") or {}).get("consortium.json", "{}")
                document = parse_consortium(text)
                peers = document.peers("partyLink")
                return peers if peers[2] == "p2-moved.example:7443" else None

            peers = await eventually(moved, what="the edited endpoint in the ConfigMap")
            assert peers == ["p0.example:7100", "p1.example:7100", "p2-moved.example:7443"]

    run_scenario(scenario)


def failed_status(cluster: Cluster, name: str) -> dict[str, Any] | None:
    status = status_of(cluster, name)
    return status if status.get("phase") == "Failed" else None


def test_a_job_is_submitted_only_with_the_analysts_own_credentials(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_operator(tmp_path, default_zone="z1") as cluster:
            # no credentials: refused, never submitted with the operator's token (regression)
            bare = analytics_job("bare")
            del bare["spec"]["credentials"]
            await cluster.api.create(AJ, bare)
            missing = analytics_job("missing", credentials={"secretRef": {"name": "nobody"}})
            await cluster.api.create(AJ, missing)
            for name, words in (
                ("bare", "spec.credentials.secretRef.name"),
                ("missing", "Secret 'nobody'"),
            ):
                status = await eventually(lambda n=name: failed_status(cluster, n), what=name)
                valid = next(c for c in status["conditions"] if c["type"] == "Valid")
                assert valid["status"] == "False" and words in valid["message"], valid
            assert cluster.execution.submitted == []
            # a job of that id someone else submitted is not adopted (regression)
            await cluster.execution.submit({"id": "taken"}, "someone-elses-token")
            await cluster.api.create(AJ, analytics_job("taken"))
            status = await eventually(lambda: failed_status(cluster, "taken"), what="conflict")
            submitted = next(c for c in status["conditions"] if c["type"] == "Submitted")
            assert submitted["status"] == "False" and "409" in submitted["message"]
            assert cluster.api.list(JOBS, NAMESPACE) == []

    run_scenario(scenario)


def test_a_worker_job_the_api_server_refuses_fails_the_job_with_its_reason(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_operator(tmp_path, default_zone="z1") as cluster:
            reason = 'Job.batch "sales-workers" is invalid: spec.template.spec.containers[0].image'
            cluster.api.invalid["jobs"] = reason
            await cluster.api.create(AJ, analytics_job())
            status = await eventually(lambda: failed_status(cluster, "sales"), what="the failure")
            # before, a 422 was taken for "already exists" and status said the workers
            # existed (regression)
            assert reason in status["message"]
            conditions = {c["type"]: c for c in status["conditions"]}
            assert conditions["Failed"]["reason"] == "WorkersInvalid"
            assert "WorkersCreated" not in conditions
            assert cluster.execution.cancelled == ["sales"]  # its tuples are released
            assert cluster.api.list(JOBS, NAMESPACE) == []

    run_scenario(scenario)


def worker_job_ids(cluster: Cluster) -> list[str]:
    """The TALLY_JOB_ID of every worker Job."""
    ids = []
    for job in cluster.api.list(JOBS, NAMESPACE):
        env = job["spec"]["template"]["spec"]["containers"][0]["env"]
        ids += [e["value"] for e in env if e["name"] == "TALLY_JOB_ID"]
    return ids


def test_a_job_created_again_with_the_same_name_never_gets_the_old_result(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        async with running_operator(tmp_path, default_zone="z1") as cluster:
            await cluster.api.create(AJ, analytics_job())
            await running(cluster)
            cluster.execution.report(
                "sales", phase="Succeeded", stage=4, results={"totals": ("ds-old",)}
            )
            await eventually(lambda: status_of(cluster).get("results"), what="old result")
            await cluster.api.delete(AJ, NAMESPACE, "sales")
            await eventually(lambda: cluster.analytics_job("sales") is None, what="deletion")

            # The same manifest again: before, the operator found the finished job of
            # that id and showed its old result as the new job's (regression).
            await cluster.api.create(AJ, analytics_job())
            status = await eventually(lambda: failed_status(cluster, "sales"), what="refusal")
            assert "results" not in status
            submitted = next(c for c in status["conditions"] if c["type"] == "Submitted")
            assert submitted["status"] == "False" and submitted["reason"] == "JobIdUsed"
            assert "'sales' is already used" in status["message"]
            assert "new spec.jobId" in status["message"]
            assert cluster.api.list(JOBS, NAMESPACE) == []  # no workers for the old job
            await eventually(lambda: cluster.events("JobIdUsed"), what="a Warning event")

            # Deleting the refused one cancels nothing; with a new jobId the same name
            # runs a new job.
            await cluster.api.delete(AJ, NAMESPACE, "sales")
            await eventually(lambda: cluster.analytics_job("sales") is None, what="deletion")
            assert cluster.execution.cancelled == []
            await cluster.api.create(AJ, analytics_job(jobId="sales-2"))
            status = await running(cluster)
            assert status["jobId"] == "sales-2" and "results" not in status
            assert cluster.execution.submitted[-1]["id"] == "sales-2"
            assert worker_job_ids(cluster) == ["sales-2"]

    run_scenario(scenario)


def test_a_second_analytics_job_with_a_running_jobs_id_is_refused(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_operator(tmp_path, default_zone="z1") as cluster:
            await cluster.api.create(AJ, analytics_job("first", jobId="shared"))
            await running(cluster, "first")
            # before, it took the running job for its own and started a second set of
            # workers for it (regression)
            await cluster.api.create(AJ, analytics_job("second", jobId="shared"))
            status = await eventually(lambda: failed_status(cluster, "second"), what="refusal")
            assert "that job is Running" in status["message"]
            assert worker_job_ids(cluster) == ["shared"]
            await cluster.api.delete(AJ, NAMESPACE, "second")
            await eventually(lambda: cluster.analytics_job("second") is None, what="deletion")
            assert cluster.execution.cancelled == []  # the first's job goes on
            assert status_of(cluster, "first")["phase"] == "Running"

    run_scenario(scenario)


def test_a_job_deleted_before_its_id_is_recorded_is_cancelled(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_operator(tmp_path, default_zone="z1") as cluster:
            cluster.api.unavailable["jobs"] = "etcdserver: request timed out"
            await cluster.api.create(AJ, analytics_job())
            await eventually(lambda: cluster.execution.submitted, what="the submission")
            jobs = f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs"
            await eventually(
                lambda: ("POST", jobs) in {seen[:2] for seen in cluster.api.seen},
                what="the failed attempt to create the workers",
            )
            assert "jobId" not in status_of(cluster)  # the creation is being retried

            await cluster.api.delete(AJ, NAMESPACE, "sales")

            await eventually(lambda: cluster.analytics_job("sales") is None, what="deletion")
            # before, a job whose id status never recorded kept its tuple reservation
            # (regression)
            assert cluster.execution.cancelled == ["sales"]

    run_scenario(scenario)
