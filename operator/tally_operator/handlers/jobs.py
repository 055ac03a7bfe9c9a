"""Creating and deleting an AnalyticsJob.

Creation, in order (each step idempotent, so kopf may retry the handler):

1. validate the spec — an invalid one gets ``phase: Failed`` and a ``Valid=False``
   condition listing every problem, a Warning event, and no retries;
2. choose the zone: ``spec.scheduling.zone``, else the zone of the node running this
   party's secret-store, else the configured default (recorded in status);
3. read the analyst's token from the Secret ``spec.credentials.secretRef`` names;
4. claim the job id for this AnalyticsJob (:mod:`tally_operator.handlers.claims`): an
   id the execution service already knows is an earlier job's and is refused, never
   adopted with its old result;
5. submit the job with the analyst's token, never with the operator's own credential
   (a retry finds its own job; a job of that id submitted by someone else or with
   another spec is a conflict, never adopted);
6. get the job's worker token from the execution service and put it in a Secret owned
   by the AnalyticsJob (an existing one is kept): the pods' only credential there,
   good for attaching and reporting this job's workers; then create the Indexed
   worker Job (an existing one is kept);
7. record jobId, zone, phase and conditions in status, post an event.

Deletion (kopf's finalizer) cancels the job at the execution service, which releases
its tuple reservation — by ``status.jobId``, else by the claimed id, so a job deleted
while its creation was still being retried is cancelled too — and deletes the
worker Job.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
from collections.abc import Awaitable, Mapping
from typing import Any

import kopf
from kubernetes_asyncio.client import V1Pod

from tally_operator.builders.job import (
    Owner,
    WorkerTemplate,
    build_worker_job,
    build_worker_secret,
    consortium_configmap_name,
    worker_job_name,
)
from tally_operator.builders.scheduling import Placement
from tally_operator.builders.status import (
    ConditionType,
    Phase,
    condition,
    merge_conditions,
    now_iso,
    progress_text,
)
from tally_operator.execution import (
    ExecutionJobNotFound,
    ExecutionJobState,
    ExecutionRejected,
    ExecutionUnavailable,
    Submission,
)
from tally_operator.handlers import claims, events
from tally_operator.kube import (
    KubeConflict,
    KubeInvalid,
    KubeNotFound,
    KubeUnavailable,
)
from tally_operator.resources import ZONE_LABEL
from tally_operator.runtime import Runtime
from tally_operator.settings import OperatorConfig
from tally_operator.spec import (
    AnalyticsJobSpec,
    InvalidSpecError,
    SpecLimits,
    parse_analytics_job_spec,
)

RETRY_DELAY = 10.0
CANCEL_ATTEMPTS = 12
LEGACY_ZONE_LABEL = "failure-domain.beta.kubernetes.io/zone"


def phase_of(state: ExecutionJobState) -> Phase:
    """The AnalyticsJob phase for an execution-service phase (Cancelled is a failure)."""
    if state.phase == "Cancelled":
        return Phase.FAILED
    return Phase(state.phase)


def spec_limits(config: OperatorConfig) -> SpecLimits:
    """The spec bounds and defaults set by the operator's configuration."""
    return SpecLimits(
        max_partitions=config.max_partitions,
        default_max_restarts=config.default_max_restarts,
        default_consortium=config.default_consortium,
    )


def worker_template(config: OperatorConfig) -> WorkerTemplate:
    """The worker settings taken from the operator's configuration."""
    return WorkerTemplate(
        image=config.worker_image,
        command=config.worker_command,
        party_id=config.party_id,
        execution_url=config.execution_url,
        service_account=config.worker_service_account,
        resources=config.worker_resources,
        backoff_limit=config.worker_backoff_limit,
        ttl_seconds=config.worker_ttl_seconds,
        spot_tolerations=config.spot_tolerations,
        spot_node_labels=config.spot_node_labels,
        env_configmap=config.worker_env_configmap,
        env_secret=config.worker_env_secret,
        partylink_tls_secret=config.partylink_tls_secret,
        rest_tls_secret=config.rest_tls_secret,
        priority_class=config.worker_priority_class,
    )


async def create_job(
    *,
    body: Mapping[str, Any],
    spec: Mapping[str, Any],
    name: str,
    namespace: str,
    uid: str,
    patch: kopf.Patch,
    runtime: Runtime,
) -> None:
    """Validate, place, submit, create the workers, and record it all in status."""
    now = now_iso()
    try:
        job_spec = parse_analytics_job_spec(spec, name=name, limits=spec_limits(runtime.config))
    except InvalidSpecError as exc:
        _reject(body, patch, reason="InvalidSpec", message=f"invalid spec: {exc}", now=now)
        raise kopf.PermanentError(f"invalid spec: {exc}") from exc

    await _require_consortium(job_spec.consortium, namespace, patch, runtime, now=now)
    zone, zone_source = await choose_zone(job_spec.scheduling.zone, runtime)
    placement = Placement(zone=zone, spot=job_spec.scheduling.spot)

    token = await _analyst_token(job_spec, namespace, body, patch, runtime, now=now)
    submission = await _submit(job_spec, token, namespace, name, body, patch, runtime, now=now)
    state = submission.state
    if state.id and state.id != job_spec.job_id:
        # the service scopes the name to the analyst: its workers, status and later
        # reads and cancels use the id it answered with
        job_spec = dataclasses.replace(job_spec, job_id=state.id)

    owner = Owner(name=name, namespace=namespace, uid=uid)
    await _create_worker_secret(owner, job_spec, body, patch, runtime, now=now)
    manifest = build_worker_job(
        owner=owner,
        spec=job_spec,
        placement=placement,
        template=worker_template(runtime.config),
    )
    await _create_once(
        runtime.kube.create_job(namespace, manifest),
        "the worker Job",
        job_spec,
        body,
        patch,
        runtime,
        now=now,
    )

    phase = phase_of(state)
    where = f"zone {zone} (from {zone_source})" if zone else "any zone (none configured)"
    patch.status.update(
        {
            "phase": str(phase),
            "jobId": job_spec.job_id,
            "workerJob": manifest["metadata"]["name"],
            "partitions": job_spec.partitions,
            "zone": zone,
            "zoneSource": zone_source,
            "spot": job_spec.scheduling.spot,
            "maxRestarts": job_spec.scheduling.max_restarts,
            "restarts": 0,
            "progress": progress_text(state.stage, state.stages),
            "stage": state.stage,
            "stages": state.stages,
            "startTime": now,
            "message": None,
            "conditions": merge_conditions(
                [],
                [
                    condition(ConditionType.VALID, True, "SpecValid", "the spec is valid", now=now),
                    condition(
                        ConditionType.SUBMITTED,
                        True,
                        "Submitted",
                        f"the execution service accepted job {job_spec.job_id}",
                        now=now,
                    ),
                    condition(
                        ConditionType.WORKERS_CREATED,
                        True,
                        "WorkersCreated",
                        f"{job_spec.partitions} worker(s) in {where}",
                        now=now,
                    ),
                ],
            ),
        }
    )
    spot = "spot nodes allowed" if placement.spot else "no spot nodes"
    events.post(
        body,
        [
            events.normal(
                "Submitted",
                f"job {job_spec.job_id}: {job_spec.partitions} worker(s) in {where}, {spot}",
            ),
            events.normal(str(phase), f"job {job_spec.job_id} is {str(phase).lower()}"),
        ],
    )


async def _create_worker_secret(
    owner: Owner,
    job_spec: AnalyticsJobSpec,
    body: Mapping[str, Any],
    patch: kopf.Patch,
    runtime: Runtime,
    *,
    now: str,
) -> None:
    """The Secret of the job's worker token: its pods' only credential at the execution
    service, which attaches and reports this job's workers and nothing else."""
    try:
        token = await runtime.execution.worker_token(job_spec.job_id)
    except ExecutionUnavailable as exc:
        raise kopf.TemporaryError(str(exc), delay=RETRY_DELAY) from exc
    except (ExecutionRejected, ExecutionJobNotFound) as exc:
        await _cancel_quietly(runtime, job_spec.job_id)
        message = f"no worker credential for job {job_spec.job_id}: {exc}"
        _reject(body, patch, reason="WorkersInvalid", message=message, now=now)
        raise kopf.PermanentError(message) from exc
    secret = build_worker_secret(owner=owner, spec=job_spec, token=token)
    # an existing Secret is an earlier attempt's: its token is still valid
    await _create_once(
        runtime.kube.create_secret(owner.namespace, secret),
        "the workers' Secret",
        job_spec,
        body,
        patch,
        runtime,
        now=now,
    )


async def _create_once(
    creation: Awaitable[None],
    what: str,
    job_spec: AnalyticsJobSpec,
    body: Mapping[str, Any],
    patch: kopf.Patch,
    runtime: Runtime,
    *,
    now: str,
) -> None:
    """Create an object of the job's; one that exists (an earlier attempt of this
    handler) is kept, a refused one fails the job with its reason (and releases its
    tuples), an unreachable API server is retried."""
    try:
        await creation
    except KubeConflict:
        pass
    except KubeInvalid as exc:  # before, a 422 was taken for "already exists"
        await _cancel_quietly(runtime, job_spec.job_id)
        message = f"cannot create {what}: {exc}"
        _reject(body, patch, reason="WorkersInvalid", message=message, now=now)
        raise kopf.PermanentError(message) from exc
    except KubeUnavailable as exc:
        raise kopf.TemporaryError(f"cannot create {what}: {exc}", delay=RETRY_DELAY) from exc


async def _submit(
    job_spec: AnalyticsJobSpec,
    token: str,
    namespace: str,
    name: str,
    body: Mapping[str, Any],
    patch: kopf.Patch,
    runtime: Runtime,
    *,
    now: str,
) -> Submission:
    """Claim the job id for this AnalyticsJob, then submit the job with ``token``."""
    job_id = job_spec.job_id
    claimed_before = claims.claimed_job_id(body) == job_id
    earlier = None if claimed_before else await claims.known(runtime, job_id, token)
    if not claimed_before and earlier is None:
        await claims.claim(runtime, namespace=namespace, name=name, job_id=job_id)
    try:
        submission = await runtime.execution.submit(job_spec.execution_request(), token)
    except ExecutionUnavailable as exc:
        raise kopf.TemporaryError(str(exc), delay=RETRY_DELAY) from exc
    except ExecutionRejected as exc:
        if not claimed_before:
            claims.withdraw(patch)  # nothing of ours was created under this id
        _reject(body, patch, reason="Rejected", message=str(exc), now=now)
        raise kopf.PermanentError(str(exc)) from exc
    if not claimed_before and (earlier is not None or not submission.created):
        if submission.created:  # the earlier job vanished meanwhile: this one is unclaimed
            await _cancel_quietly(runtime, job_id)
        claims.withdraw(patch)
        used = claims.JobIdUsed(job_id, (earlier or submission.state).phase)
        _reject(body, patch, reason="JobIdUsed", message=str(used), now=now)
        raise kopf.PermanentError(str(used))
    return submission


async def _analyst_token(
    job_spec: AnalyticsJobSpec,
    namespace: str,
    body: Mapping[str, Any],
    patch: kopf.Patch,
    runtime: Runtime,
    *,
    now: str,
) -> str:
    """The bearer token in the job's credentials Secret (never logged, never in status)."""
    ref = job_spec.credentials
    try:
        data = (await runtime.kube.read_secret(namespace, ref.secret_name)).data or {}
    except KubeNotFound:
        data = {}
    except KubeUnavailable as exc:
        raise kopf.TemporaryError(
            f"cannot read the credentials Secret: {exc}", delay=RETRY_DELAY
        ) from exc
    encoded = data.get(ref.key)
    token = ""
    if isinstance(encoded, str):
        with contextlib.suppress(ValueError):
            token = base64.b64decode(encoded, validate=True).decode().strip()
    if not token:
        message = (
            f"invalid spec: spec.credentials.secretRef: Secret {ref.secret_name!r} in namespace "
            f"{namespace!r} has no key {ref.key!r} holding your token"
        )
        _reject(body, patch, reason="InvalidSpec", message=message, now=now)
        raise kopf.PermanentError(message)
    return token


async def _cancel_quietly(runtime: Runtime, job_id: str) -> None:
    """Best effort: cancel a submitted job whose workers cannot be created (its tuples are
    released); the execution service's own timeouts fail it if this does not get through."""
    with contextlib.suppress(ExecutionUnavailable, ExecutionRejected):
        await runtime.execution.cancel(job_id)


def _reject(
    body: Mapping[str, Any], patch: kopf.Patch, *, reason: str, message: str, now: str
) -> None:
    """Fail the job for good: an invalid spec, or one the execution service refused."""
    if reason == "InvalidSpec":
        verdict = [condition(ConditionType.VALID, False, reason, message, now=now)]
    else:
        verdict = [
            condition(ConditionType.VALID, True, "SpecValid", "the spec is valid", now=now),
            condition(ConditionType.SUBMITTED, False, reason, message, now=now),
        ]
    patch.status.update(
        {
            "phase": str(Phase.FAILED),
            "message": message,
            "completionTime": now,
            "conditions": merge_conditions(
                [], [*verdict, condition(ConditionType.FAILED, True, reason, message, now=now)]
            ),
        }
    )
    events.post(body, [events.warning(reason, message)])


async def _require_consortium(
    consortium: str, namespace: str, patch: kopf.Patch, runtime: Runtime, *, now: str
) -> None:
    """Wait (retrying) until the operator has rendered the job's Consortium."""
    configmap = consortium_configmap_name(consortium)
    try:
        await runtime.kube.read_config_map(namespace, configmap)
    except KubeNotFound:
        message = (
            f"waiting for Consortium {consortium!r}: its ConfigMap {configmap!r} does not exist "
            f"yet (kubectl get consortia -n {namespace})"
        )
        patch.status.update(
            {
                "phase": str(Phase.PENDING),
                "message": message,
                "conditions": merge_conditions(
                    [],
                    [
                        condition(
                            ConditionType.VALID, True, "SpecValid", "the spec is valid", now=now
                        ),
                        condition(
                            ConditionType.SUBMITTED, False, "WaitingForConsortium", message, now=now
                        ),
                    ],
                ),
            }
        )
        raise kopf.TemporaryError(message, delay=RETRY_DELAY) from None
    except KubeUnavailable as exc:
        raise kopf.TemporaryError(f"cannot read {configmap!r}: {exc}", delay=RETRY_DELAY) from exc


async def choose_zone(requested: str | None, runtime: Runtime) -> tuple[str | None, str]:
    """The zone of a job's workers and where it came from (spec, secret-store, default)."""
    if requested:
        return requested, "spec"
    try:
        zone = await secret_store_zone(runtime)
    except KubeUnavailable as exc:
        raise kopf.TemporaryError(
            f"cannot find the secret-store's zone: {exc}", delay=RETRY_DELAY
        ) from exc
    if zone:
        return zone, "secret-store"
    if runtime.config.default_zone:
        return runtime.config.default_zone, "default"
    return None, "none"


async def secret_store_zone(runtime: Runtime) -> str | None:
    """The zone label of the node running this party's secret-store, if any."""
    pods = await runtime.kube.list_pods(
        runtime.config.namespace, label_selector=runtime.config.secret_store_selector
    )
    scheduled = [pod for pod in pods if _node_name(pod)]
    scheduled.sort(key=lambda pod: (_phase(pod) != "Running", _pod_name(pod)))
    for pod in scheduled:
        try:
            node = await runtime.kube.read_node(str(_node_name(pod)))
        except KubeNotFound:
            continue
        labels = (node.metadata.labels if node.metadata else None) or {}
        zone = labels.get(ZONE_LABEL) or labels.get(LEGACY_ZONE_LABEL)
        if zone:
            return str(zone)
    return None


def _node_name(pod: V1Pod) -> str | None:
    return pod.spec.node_name if pod.spec else None


def _phase(pod: V1Pod) -> str | None:
    return pod.status.phase if pod.status else None


def _pod_name(pod: V1Pod) -> str:
    return (pod.metadata.name if pod.metadata else None) or ""


async def delete_job(
    *,
    body: Mapping[str, Any],
    name: str,
    namespace: str,
    status: Mapping[str, Any],
    retry: int,
    runtime: Runtime,
    logger: kopf.Logger,
) -> None:
    """Cancel at the execution service (releasing tuples), delete the workers.

    The job is found by ``status.jobId``, else by the id this AnalyticsJob claimed
    before submitting (deleted while its creation was still being retried, it may have
    a job, and a tuple reservation, that status never recorded)."""
    job_id = status.get("jobId") or claims.claimed_job_id(body)
    if job_id and status.get("phase") != Phase.SUCCEEDED:
        try:
            await runtime.execution.cancel(str(job_id))
        except ExecutionUnavailable as exc:
            if retry + 1 < CANCEL_ATTEMPTS:
                raise kopf.TemporaryError(f"cannot cancel job {job_id}: {exc}", delay=5) from exc
            logger.error(f"giving up cancelling job {job_id} after {retry + 1} attempts: {exc}")
            events.post(body, [events.warning("CancelFailed", f"could not cancel job {job_id}")])
        except ExecutionRejected as exc:
            logger.warning(f"the execution service refused to cancel job {job_id}: {exc}")
    try:
        await runtime.kube.delete_job(namespace, worker_job_name(name))
    except KubeUnavailable as exc:
        raise kopf.TemporaryError(f"cannot delete the worker Job: {exc}", delay=5) from exc
    runtime.losses.forget((namespace, name))
    events.post(
        body,
        [events.normal("CleanedUp", f"job {job_id or name} cancelled and its workers deleted")],
    )
