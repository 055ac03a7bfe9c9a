"""Operator start-up: kopf's settings and the login shared with our own API client."""

from __future__ import annotations

from typing import Any

import kopf

from tally_operator.resources import ANNOTATION_PREFIX, FINALIZER
from tally_operator.runtime import Runtime


def configure(settings: kopf.OperatorSettings, runtime: Runtime) -> None:
    """Tune kopf for Tally: our finalizer and annotations, events, no CRD scanning."""
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix=ANNOTATION_PREFIX
    )
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    settings.posting.enabled = runtime.config.post_events
    # The chart installs the CRDs before the operator starts, so the operator needs no
    # cluster-wide permission to list and watch CustomResourceDefinitions.
    settings.scanning.disabled = True
    settings.networking.request_timeout = runtime.config.request_timeout * 6
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330


async def login(runtime: Runtime, /, **kwargs: Any) -> kopf.ConnectionInfo | None:
    """Log in as kopf does (the pod's service account, else a kubeconfig) and point the
    operator's own client (:class:`~tally_operator.kube.KubeApi`) at the same server as
    the same identity."""
    info = kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)
    if info is None:
        raise kopf.TemporaryError(
            "no Kubernetes credentials: neither a service account token nor KUBECONFIG found",
            delay=10,
        )
    await runtime.kube.connect(info)
    return info
