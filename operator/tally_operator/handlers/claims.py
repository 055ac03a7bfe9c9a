"""Which AnalyticsJob a job id at this party's execution service belongs to.

The execution-service job id is the same at every party (``spec.jobId``, default
``metadata.name``; DESIGN §8): the parties' services agree on a job by its id, so
the id cannot carry anything one cluster alone knows, such as the object's uid.
Instead each id belongs to *one* AnalyticsJob at this party, the first to claim it:

1. Before its first submission the AnalyticsJob asks the execution service for the
   id. A known id is an earlier job's — one whose AnalyticsJob was deleted and
   created again with the same name, or another object or client that used the id.
   The submission still goes ahead, since it creates nothing for a known id and
   brings the service's verdict: a ``409`` if that job has another spec or submitter
   (``Rejected``, with the service's reason), else the same job, and the new
   AnalyticsJob is refused (``JobIdUsed``): it neither runs that job nor takes its
   old result. Running it again takes a new ``spec.jobId``.
2. An unknown id is claimed: the annotation ``tally.dev/claimed-job-id`` goes on the
   AnalyticsJob *before* it is submitted. A retry of the create handler (kopf
   retries it after a temporary failure) then knows the job it finds is its own, and
   the finalizer knows there may be a job to cancel, and by which id, even when the
   AnalyticsJob is deleted before ``status.jobId`` was recorded.
3. The first submission after the claim must create the job. Finding one instead
   means another object submitted the id between 1 and 3; the AnalyticsJob is
   refused as in 1 and its claim withdrawn, so its deletion cancels nothing of the
   other's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf

from tally_operator.execution import (
    ExecutionJobNotFound,
    ExecutionJobState,
    ExecutionRejected,
    ExecutionUnavailable,
)
from tally_operator.kube import KubeError
from tally_operator.resources import CLAIMED_JOB_ID_ANNOTATION
from tally_operator.runtime import Runtime

RETRY_DELAY = 10.0


class JobIdUsed(Exception):
    """The job id belongs to an earlier job at this party's execution service."""

    def __init__(self, job_id: str, phase: str) -> None:
        self.job_id, self.phase = job_id, phase
        super().__init__(
            f"job id {job_id!r} is already used at this party's execution service (that job "
            f"is {phase}): it belongs to an earlier AnalyticsJob or submission, so this one "
            "neither runs it nor takes its result; to run the job again, give it a new "
            "spec.jobId, the same at every party"
        )


def claimed_job_id(body: Mapping[str, Any]) -> str | None:
    """The job id this AnalyticsJob claimed, if it did."""
    annotations = body.get("metadata", {}).get("annotations") or {}
    claimed = annotations.get(CLAIMED_JOB_ID_ANNOTATION)
    return str(claimed) if claimed else None


async def known(runtime: Runtime, job_id: str, token: str) -> ExecutionJobState | None:
    """Step 1: the state of the analyst's (``token``'s) job ``job_id``, if there is one.

    Job ids are scoped by submitter: another identity's job of the same name is no
    conflict, so it is looked up as the analyst, not with the operator's credential.
    """
    try:
        return await runtime.execution.get(job_id, token)
    except ExecutionJobNotFound:
        return None
    except (ExecutionUnavailable, ExecutionRejected) as exc:
        raise kopf.TemporaryError(
            f"cannot check whether job id {job_id!r} is free: {exc}", delay=RETRY_DELAY
        ) from exc


async def claim(runtime: Runtime, *, namespace: str, name: str, job_id: str) -> None:
    """Step 2: record on AnalyticsJob ``name`` that it claims ``job_id``."""
    annotation = {"metadata": {"annotations": {CLAIMED_JOB_ID_ANNOTATION: job_id}}}
    try:
        await runtime.kube.patch_analytics_job(namespace, name, annotation)
    except KubeError as exc:
        raise kopf.TemporaryError(
            f"cannot record the claim of job id {job_id!r}: {exc}", delay=RETRY_DELAY
        ) from exc


def withdraw(patch: kopf.Patch) -> None:
    """Step 3: drop the claim (with the refusal's status, in kopf's patch)."""
    patch.metadata.annotations[CLAIMED_JOB_ID_ANNOTATION] = None
