"""The monitor of a running AnalyticsJob: progress, lost workers, the end.

One kopf daemon per submitted, unfinished job. Each step it

1. takes the workers lost since the last step (reported by the pod watcher, which
   wakes it at once) and counts one restart per lost pod — the Job controller has
   already started the replacement, which resumes from the newest checkpoint;
2. fails the job once restarts exceed ``maxRestarts``: cancels it at the execution
   service (releasing its tuples) and deletes the workers;
3. fails the job when the worker Job failed on its own (``backoffLimit``, or a worker
   reporting a permanent error);
4. otherwise mirrors the execution service's phase and stage k of K into status;

then writes one status patch, posts an event per transition, and sleeps for the poll
interval or until the next lost worker. :func:`plan_step` decides; it is pure.
The daemon is the only writer of ``status.restarts`` once a job runs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import kopf

from tally_operator.builders.job import worker_job_name
from tally_operator.builders.status import (
    TERMINAL_PHASES,
    ConditionType,
    Phase,
    condition,
    merge_conditions,
    now_iso,
    progress_text,
)
from tally_operator.execution import (
    ExecutionError,
    ExecutionJobNotFound,
    ExecutionJobState,
    ExecutionUnavailable,
)
from tally_operator.handlers import events
from tally_operator.handlers.jobs import phase_of
from tally_operator.kube import KubeError, KubeNotFound
from tally_operator.runtime import LostWorker, Runtime


@dataclasses.dataclass(frozen=True)
class Observation:
    """What the monitor saw in one step."""

    phase: Phase
    restarts: int
    max_restarts: int
    counted: frozenset[str]
    conditions: Sequence[Mapping[str, Any]]
    losses: Sequence[LostWorker]
    execution: ExecutionJobState | None
    workers_failure: str | None


@dataclasses.dataclass
class Plan:
    """What the monitor does in one step."""

    status: dict[str, Any]
    events: list[events.Event]
    cancel: bool = False
    delete_workers: bool = False

    @property
    def finished(self) -> bool:
        return self.status.get("phase") in TERMINAL_PHASES


def should_monitor(status: Mapping[str, Any], **_: Any) -> bool:
    """kopf filter: a submitted job that has not finished."""
    return bool(status.get("jobId")) and status.get("phase") not in TERMINAL_PHASES


def plan_step(observed: Observation, *, now: str) -> Plan:
    """Decide the status patch, events and actions of one monitor step."""
    plan = Plan(status={}, events=[])
    updates: list[dict[str, str]] = []
    new_losses = _new_losses(observed)
    restarts = observed.restarts + len(new_losses)
    for number, loss in enumerate(new_losses, start=observed.restarts + 1):
        where = f"partition {loss.partition}" if loss.partition is not None else "a partition"
        plan.events.append(
            events.warning(
                "WorkerLost",
                f"worker {loss.pod} ({where}) lost: {loss.reason}; restart {number} of at most "
                f"{observed.max_restarts}; its replacement resumes from the newest checkpoint",
            )
        )
    if new_losses:
        plan.status["restarts"] = restarts
        plan.status["lostWorkers"] = [
            {
                "pod": loss.pod,
                "uid": loss.uid,
                "partition": loss.partition,
                "reason": loss.reason,
                "time": now,
            }
            for loss in new_losses
        ]

    phase, failure = _next_phase(observed, restarts)
    if phase is Phase.FAILED and failure is not None:
        reason, message = failure
        plan.status["message"] = message
        updates.append(condition(ConditionType.FAILED, True, reason, message, now=now))
        plan.events.append(events.warning(reason, message))
        plan.cancel = reason in ("TooManyRestarts", "WorkersFailed")
        plan.delete_workers = reason != "WorkersFailed"  # keep failed pods for inspection
    if observed.execution is not None:
        state = observed.execution
        plan.status["stage"], plan.status["stages"] = state.stage, state.stages
        plan.status["progress"] = progress_text(state.stage, state.stages)
        if phase is Phase.SUCCEEDED:
            plan.status["results"] = [
                {"output": output, "datasets": list(datasets)}
                for output, datasets in sorted(state.results.items())
            ]
            message = f"job {state.id} succeeded"
            updates.append(condition(ConditionType.SUCCEEDED, True, "Succeeded", message, now=now))
    if phase is not observed.phase:
        plan.status["phase"] = str(phase)
        if phase is not Phase.FAILED:
            plan.events.append(events.normal(str(phase), f"job is {str(phase).lower()}"))
        if phase in TERMINAL_PHASES:
            plan.status["completionTime"] = now
    if updates:
        plan.status["conditions"] = merge_conditions(observed.conditions, updates)
    return plan


def _new_losses(observed: Observation) -> list[LostWorker]:
    seen = set(observed.counted)
    fresh: list[LostWorker] = []
    for loss in observed.losses:
        if loss.uid not in seen:
            seen.add(loss.uid)
            fresh.append(loss)
    return fresh


def _next_phase(observed: Observation, restarts: int) -> tuple[Phase, tuple[str, str] | None]:
    if restarts > observed.max_restarts:
        return Phase.FAILED, (
            "TooManyRestarts",
            f"workers were lost {restarts} times, more than maxRestarts "
            f"({observed.max_restarts}); the job is cancelled",
        )
    state = observed.execution
    if state is not None and state.phase in ("Failed", "Cancelled"):
        reason = "Cancelled" if state.phase == "Cancelled" else "ExecutionFailed"
        detail = state.failure_reason or state.phase.lower()
        return Phase.FAILED, (reason, f"the execution service reports job {state.id}: {detail}")
    if observed.workers_failure is not None:
        return Phase.FAILED, ("WorkersFailed", observed.workers_failure)
    if state is not None:
        return phase_of(state), None
    return observed.phase, None


async def monitor_job(
    *,
    body: Mapping[str, Any],
    name: str,
    namespace: str,
    stopped: kopf.DaemonStopped,
    runtime: Runtime,
    logger: kopf.Logger,
) -> None:
    """Run :func:`plan_step` until the job finishes or the daemon is stopped."""
    key = (namespace, name)
    status: dict[str, Any] = dict(body.get("status") or {})
    counted = {str(w.get("uid")) for w in status.get("lostWorkers") or [] if isinstance(w, Mapping)}
    lost_log: list[dict[str, Any]] = list(status.get("lostWorkers") or [])
    while not stopped:
        losses = runtime.losses.take(key)
        observed = Observation(
            phase=Phase(status.get("phase", Phase.PENDING)),
            restarts=int(status.get("restarts") or 0),
            max_restarts=int(status.get("maxRestarts", runtime.config.default_max_restarts)),
            counted=frozenset(counted),
            conditions=list(status.get("conditions") or []),
            losses=losses,
            execution=await _execution_state(runtime, str(status["jobId"]), logger),
            workers_failure=await _workers_failure(runtime, namespace, name, logger),
        )
        plan = plan_step(observed, now=now_iso())
        if "lostWorkers" in plan.status:
            plan.status["lostWorkers"] = lost_log + plan.status["lostWorkers"]
        if plan.status:
            try:
                await runtime.kube.patch_analytics_job_status(namespace, name, plan.status)
            except KubeNotFound:
                return  # the job is gone; the finalizer did the cleanup
            except KubeError as exc:
                logger.warning(f"cannot update the status, retrying: {exc}")
                runtime.losses.put_back(key, losses)
                await _sleep(runtime, key, stopped)
                continue
            status.update(plan.status)
            lost_log = list(status.get("lostWorkers") or [])
            counted |= {loss.uid for loss in losses}
        events.post(body, plan.events)
        await _act(plan, runtime, namespace, name, str(status["jobId"]), logger)
        if plan.finished:
            runtime.losses.forget(key)
            return
        await _sleep(runtime, key, stopped)


async def _execution_state(
    runtime: Runtime, job_id: str, logger: kopf.Logger
) -> ExecutionJobState | None:
    try:
        return await runtime.execution.get(job_id)
    except ExecutionJobNotFound:
        return ExecutionJobState(
            id=job_id, phase="Failed", failure_reason="the execution service lost the job"
        )
    except ExecutionUnavailable as exc:
        logger.warning(f"cannot read the progress of job {job_id}: {exc}")
    except ExecutionError as exc:
        logger.warning(f"the execution service refused a progress read of {job_id}: {exc}")
    return None


async def _workers_failure(
    runtime: Runtime, namespace: str, name: str, logger: kopf.Logger
) -> str | None:
    """The reason the worker Job failed, if it did."""
    try:
        job = await runtime.kube.read_job(namespace, worker_job_name(name))
    except KubeNotFound:
        return None
    except KubeError as exc:
        logger.warning(f"cannot read the worker Job: {exc}")
        return None
    for cond in (job.status.conditions if job.status else None) or []:
        if cond.type == "Failed" and cond.status == "True":
            detail = cond.message or "no message"
            return f"the worker Job failed ({cond.reason}): {detail}"
    return None


async def _act(
    plan: Plan, runtime: Runtime, namespace: str, name: str, job_id: str, logger: kopf.Logger
) -> None:
    if plan.cancel:
        try:
            await runtime.execution.cancel(job_id)
        except ExecutionError as exc:
            logger.warning(f"cannot cancel job {job_id} now (the finalizer retries): {exc}")
    if plan.delete_workers:
        try:
            await runtime.kube.delete_job(namespace, worker_job_name(name))
        except KubeError as exc:
            logger.warning(f"cannot delete the worker Job: {exc}")


async def _sleep(runtime: Runtime, key: tuple[str, str], stopped: kopf.DaemonStopped) -> None:
    await runtime.losses.wait(key, timeout=runtime.config.poll_interval, stopped=stopped.wait())
