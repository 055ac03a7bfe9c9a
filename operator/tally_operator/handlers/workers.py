"""Watching worker pods for the ones lost to preemption, eviction, drain or deletion.

A worker is *lost* when its pod carries the ``DisruptionTarget`` condition (the
kubelet, the eviction API, the taint manager or pod GC set it when a node is
preempted, drained or deleted), or when the pod is deleted before it finished. A pod
that fails on its own (non-zero exit, no disruption) is not lost: the Job's
``backoffLimit`` counts it. Losses go to the :class:`~tally_operator.runtime.WorkerLossBook`,
which wakes the job's monitor; the monitor counts each pod uid once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tally_operator.resources import COMPLETION_INDEX_ANNOTATION, LABEL_ANALYTICS_JOB
from tally_operator.runtime import LostWorker, Runtime

FINISHED_POD_PHASES = ("Succeeded", "Failed")


def lost_worker(event_type: str | None, pod: Mapping[str, Any]) -> LostWorker | None:
    """The loss this pod event reports, or None."""
    metadata = pod.get("metadata", {})
    status = pod.get("status", {})
    uid = metadata.get("uid")
    if not uid:
        return None
    reason: str | None = None
    for cond in status.get("conditions") or []:
        if cond.get("type") == "DisruptionTarget" and cond.get("status") == "True":
            detail = cond.get("message") or cond.get("reason") or "disrupted"
            reason = f"{cond.get('reason', 'Disrupted')}: {detail}"
            break
    if reason is None and event_type == "DELETED":
        phase = status.get("phase", "Pending")
        if phase not in FINISHED_POD_PHASES:
            reason = f"pod deleted while {phase}"
    if reason is None:
        return None
    return LostWorker(
        uid=str(uid),
        pod=str(metadata.get("name", "")),
        partition=_partition(metadata),
        reason=reason,
    )


def _partition(metadata: Mapping[str, Any]) -> int | None:
    index = (metadata.get("annotations") or {}).get(COMPLETION_INDEX_ANNOTATION)
    if index is None:
        index = (metadata.get("labels") or {}).get(COMPLETION_INDEX_ANNOTATION)
    try:
        return int(index) if index is not None else None
    except ValueError:
        return None


def observe_pod(event_type: str | None, pod: Mapping[str, Any], runtime: Runtime) -> None:
    """Record a lost worker of an AnalyticsJob for its monitor."""
    loss = lost_worker(event_type, pod)
    if loss is None:
        return
    metadata = pod.get("metadata", {})
    job = (metadata.get("labels") or {}).get(LABEL_ANALYTICS_JOB)
    namespace = metadata.get("namespace")
    if job and namespace:
        runtime.losses.record((str(namespace), str(job)), loss)
