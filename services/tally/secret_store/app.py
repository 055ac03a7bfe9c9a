"""The secret-store ASGI app: ``create_app(settings)``.

Start-up connects the database (migrating it to ``head`` unless disabled) and the blob
store, then runs garbage collection every ``gc_interval_s`` in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from tally.common.audit import configure as configure_audit
from tally.common.errors import install_error_handlers
from tally.common.limits import BodyLimitMiddleware
from tally.common.metrics import MetricsMiddleware
from tally.secret_store.api import datasets, health, internal, masks
from tally.secret_store.context import StoreContext, StoreMetrics, build_context
from tally.secret_store.gc import collect_garbage
from tally.secret_store.settings import SecretStoreSettings

log = logging.getLogger(__name__)

UPLOAD_ROUTES = (
    ("PUT", r"/v1/datasets/[^/]+/columns/[^/]+"),
    ("PUT", r"/v1/masked-inputs/[^/]+/columns/[^/]+"),
)
"""The share uploads: the only routes whose bodies may reach ``max_upload_bytes``."""

DESCRIPTION = """\
One party's store of secret shares. Data providers create a dataset, upload each
column's shares as little-endian uint64 (`application/octet-stream`, header
`Tally-Sha256`), then commit it; only committed datasets are listed or readable.
Errors are `{"error": code, "detail": text}`.
"""


async def _collect_periodically(store: StoreContext) -> None:
    while True:
        await asyncio.sleep(store.settings.gc_interval_s)
        try:
            await run_in_threadpool(collect_garbage, store)
        except Exception:
            log.exception("garbage collection failed; retrying at the next interval")


def create_app(settings: SecretStoreSettings | None = None) -> FastAPI:
    """The secret-store app for ``settings`` (read from the environment when omitted)."""
    settings = settings or SecretStoreSettings()
    configure_audit(settings.audit_file)
    metrics = StoreMetrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = await run_in_threadpool(build_context, settings, metrics)
        app.state.store = store
        collector = asyncio.create_task(_collect_periodically(store))
        try:
            yield
        finally:
            collector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await collector
            store.close()

    app = FastAPI(
        title="Tally secret-store",
        version="1",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url="/docs",
        openapi_url="/openapi.json",
    )
    install_error_handlers(app)
    for router in (datasets.router, masks.router, internal.router, health.router):
        app.include_router(router)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(
        BodyLimitMiddleware,
        json_limit=settings.max_json_bytes,
        upload_limit=settings.max_upload_bytes,
        upload_routes=UPLOAD_ROUTES,
    )
    return app
