"""kopf registrations: thin wrappers that hand each event to :mod:`tally_operator.handlers`.

Run with ``python -m tally_operator`` (see :mod:`tally_operator.__main__`), which
builds the :class:`~tally_operator.runtime.Runtime` once and passes it as
``memo.runtime``; every handler takes it from there.
"""

from __future__ import annotations

from typing import Any

import kopf

from tally_operator.handlers import consortia, jobs, monitor, startup, workers
from tally_operator.resources import (
    ANALYTICS_JOB_PLURAL,
    CONSORTIUM_PLURAL,
    GROUP,
    LABEL_ANALYTICS_JOB,
    VERSION,
    WORKER_LABELS,
)
from tally_operator.runtime import Runtime

ANALYTICS_JOBS = (GROUP, VERSION, ANALYTICS_JOB_PLURAL)
CONSORTIA = (GROUP, VERSION, CONSORTIUM_PLURAL)
DAEMON_CANCELLATION_TIMEOUT = 10.0


def runtime_of(memo: Any) -> Runtime:
    """The shared runtime that ``python -m tally_operator`` (or a test) put in the memo."""
    runtime = memo.get("runtime")
    if not isinstance(runtime, Runtime):
        raise kopf.PermanentError("the operator was started without memo.runtime")
    return runtime


def namespaced(namespace: str | None) -> str:
    """The namespace of a namespaced resource (kopf types it as optional)."""
    if namespace is None:
        raise kopf.PermanentError("expected a namespaced resource")
    return namespace


@kopf.on.startup()
def configure(*, settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
    startup.configure(settings, runtime_of(memo))


@kopf.on.login()
async def login(*, memo: Any, **kwargs: Any) -> kopf.ConnectionInfo | None:
    return await startup.login(runtime_of(memo), **kwargs)


@kopf.on.cleanup()
async def close(*, memo: Any, **_: Any) -> None:
    await runtime_of(memo).close()


@kopf.on.create(*ANALYTICS_JOBS)
async def create_analytics_job(
    *,
    body: kopf.Body,
    spec: kopf.Spec,
    name: str,
    namespace: str | None,
    uid: str,
    patch: kopf.Patch,
    memo: Any,
    **_: Any,
) -> None:
    await jobs.create_job(
        body=body,
        spec=spec,
        name=name,
        namespace=namespaced(namespace),
        uid=uid,
        patch=patch,
        runtime=runtime_of(memo),
    )


@kopf.daemon(
    *ANALYTICS_JOBS,
    when=monitor.should_monitor,
    cancellation_timeout=DAEMON_CANCELLATION_TIMEOUT,
)
async def monitor_analytics_job(
    *,
    body: kopf.Body,
    name: str,
    namespace: str | None,
    stopped: kopf.DaemonStopped,
    memo: Any,
    logger: kopf.Logger,
    **_: Any,
) -> None:
    await monitor.monitor_job(
        body=body,
        name=name,
        namespace=namespaced(namespace),
        stopped=stopped,
        runtime=runtime_of(memo),
        logger=logger,
    )


@kopf.on.delete(*ANALYTICS_JOBS)
async def delete_analytics_job(
    *,
    body: kopf.Body,
    name: str,
    namespace: str | None,
    status: kopf.Status,
    retry: int,
    memo: Any,
    logger: kopf.Logger,
    **_: Any,
) -> None:
    await jobs.delete_job(
        body=body,
        name=name,
        namespace=namespaced(namespace),
        status=status,
        retry=retry,
        runtime=runtime_of(memo),
        logger=logger,
    )


@kopf.on.event("", "v1", "pods", labels={**WORKER_LABELS, LABEL_ANALYTICS_JOB: kopf.PRESENT})
def observe_worker_pod(*, type: str | None, body: kopf.Body, memo: Any, **_: Any) -> None:
    workers.observe_pod(type, body, runtime_of(memo))


@kopf.on.create(*CONSORTIA)
@kopf.on.update(*CONSORTIA, field="spec")
@kopf.on.resume(*CONSORTIA)
async def reconcile_consortium(
    *,
    body: kopf.Body,
    spec: kopf.Spec,
    status: kopf.Status,
    name: str,
    namespace: str | None,
    uid: str,
    patch: kopf.Patch,
    memo: Any,
    **_: Any,
) -> None:
    await consortia.reconcile_consortium(
        body=body,
        spec=spec,
        status=status,
        name=name,
        namespace=namespaced(namespace),
        uid=uid,
        patch=patch,
        runtime=runtime_of(memo),
    )
