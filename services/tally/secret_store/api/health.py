"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from starlette.concurrency import run_in_threadpool

from tally.common.errors import ApiError, error_responses
from tally.secret_store.api.deps import StoreDep

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", responses=error_responses(503))
async def readyz(store: StoreDep) -> dict[str, str]:
    """The database and the blob store are reachable."""
    try:
        await run_in_threadpool(store.check_ready)
    except Exception as error:
        raise ApiError(503, "not_ready", f"not ready: {type(error).__name__}") from None
    return {"status": "ready"}


@router.get("/metrics", response_class=Response)
def metrics(store: StoreDep) -> Response:
    """Prometheus metrics."""
    return store.metrics.response()
