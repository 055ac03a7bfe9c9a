"""The monitor's decisions (plan_step) and the recognition of lost workers."""

from __future__ import annotations

from typing import Any

from tally_operator.builders.status import Phase
from tally_operator.execution import ExecutionJobState
from tally_operator.handlers.monitor import Observation, plan_step, should_monitor
from tally_operator.handlers.workers import lost_worker
from tally_operator.runtime import LostWorker


def observe(**changes: Any) -> Observation:
    values: dict[str, Any] = {
        "phase": Phase.RUNNING,
        "restarts": 0,
        "max_restarts": 2,
        "counted": frozenset(),
        "conditions": [],
        "losses": [],
        "execution": ExecutionJobState(id="j", phase="Running", stage=1, stages=4),
        "workers_failure": None,
    }
    values.update(changes)
    return Observation(**values)


def loss(uid: str) -> LostWorker:
    return LostWorker(uid=uid, pod=f"pod-{uid}", partition=0, reason="Preempted")


def test_progress_is_mirrored_without_a_phase_change() -> None:
    plan = plan_step(observe(), now="t")
    assert plan.status == {"stage": 1, "stages": 4, "progress": "1/4"}
    assert plan.events == [] and not plan.finished and not plan.cancel


def test_each_lost_pod_counts_once() -> None:
    plan = plan_step(observe(losses=[loss("a"), loss("a"), loss("b")], counted={"b"}), now="t")
    assert plan.status["restarts"] == 1
    assert [w["uid"] for w in plan.status["lostWorkers"]] == ["a"]
    (event,) = plan.events
    assert event.type == "Warning" and event.reason == "WorkerLost"
    assert "restart 1 of at most 2" in event.message


def test_exceeding_max_restarts_fails_cancels_and_deletes_workers() -> None:
    plan = plan_step(observe(restarts=2, losses=[loss("c")]), now="t")
    assert plan.status["phase"] == "Failed" and plan.status["restarts"] == 3
    assert plan.cancel and plan.delete_workers and plan.finished
    (failed,) = plan.status["conditions"]
    assert failed["reason"] == "TooManyRestarts" and failed["status"] == "True"


def test_reaching_max_restarts_is_still_allowed() -> None:
    plan = plan_step(observe(restarts=1, losses=[loss("c")]), now="t")
    assert plan.status["restarts"] == 2 and "phase" not in plan.status


def test_execution_failure_and_worker_job_failure() -> None:
    failed = ExecutionJobState(id="j", phase="Failed", failure_reason="peer p2 timed out")
    plan = plan_step(observe(execution=failed), now="t")
    assert plan.status["phase"] == "Failed" and "peer p2 timed out" in plan.status["message"]
    assert plan.delete_workers and not plan.cancel
    plan = plan_step(
        observe(workers_failure="the worker Job failed (BackoffLimitExceeded)"), now="t"
    )
    assert plan.status["conditions"][0]["reason"] == "WorkersFailed"
    assert plan.cancel and not plan.delete_workers  # failed pods stay for inspection


def test_unreachable_execution_service_changes_nothing() -> None:
    assert plan_step(observe(execution=None), now="t").status == {}


def test_phase_transitions_post_events_and_success_records_results() -> None:
    done = ExecutionJobState(id="j", phase="Succeeded", stage=4, stages=4, results={"t": ("d",)})
    plan = plan_step(observe(phase=Phase.RESERVING, execution=done), now="t9")
    assert plan.status["phase"] == "Succeeded" and plan.status["completionTime"] == "t9"
    assert plan.status["results"] == [{"output": "t", "datasets": ["d"]}]
    assert [e.reason for e in plan.events] == ["Succeeded"]


def test_monitor_filter() -> None:
    assert should_monitor(status={"jobId": "j", "phase": "Running"})
    assert not should_monitor(status={"jobId": "j", "phase": "Failed"})
    assert not should_monitor(status={})


def pod(phase: str, conditions: list[dict[str, str]] | None = None) -> dict[str, Any]:
    return {
        "metadata": {
            "uid": "u1",
            "name": "w-1",
            "annotations": {"batch.kubernetes.io/job-completion-index": "1"},
        },
        "status": {"phase": phase, "conditions": conditions or []},
    }


def test_lost_worker_recognition() -> None:
    disrupted = [{"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI"}]
    lost = lost_worker("MODIFIED", pod("Running", disrupted))
    assert lost is not None and lost.partition == 1 and "EvictionByEvictionAPI" in lost.reason
    assert lost_worker("DELETED", pod("Running")) is not None  # vanished mid-run
    assert lost_worker("DELETED", pod("Succeeded")) is None  # finished: cleanup, not loss
    assert lost_worker("DELETED", pod("Failed")) is None  # its own failure: backoffLimit
    assert lost_worker("MODIFIED", pod("Running")) is None
