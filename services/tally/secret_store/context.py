"""Everything a secret-store request needs, built once from the settings.

``StoreContext`` holds the settings, the metadata database (engine and session
factory), the blob store, the token authenticator and the metrics. The app keeps one
in ``app.state.store`` and hands it to routes through ``StoreDep``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import Counter
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from tally.common import blobstore
from tally.common.auth import TokenAuthenticator
from tally.common.blobstore import BlobStore
from tally.common.db import is_sqlite, make_engine, make_sessionmaker, upgrade_database
from tally.common.metrics import HttpMetrics
from tally.common.oidc import make_authenticator
from tally.secret_store.settings import SecretStoreSettings

MIGRATIONS = Path(__file__).with_name("migrations")


class StoreMetrics(HttpMetrics):
    """HTTP metrics plus the secret-store's own counters."""

    def __init__(self) -> None:
        super().__init__("secret-store")
        self.uploaded_bytes = Counter(
            "tally_secret_store_uploaded_bytes_total",
            "Share bytes stored by uploads",
            registry=self.registry,
        )
        self.served_bytes = Counter(
            "tally_secret_store_served_bytes_total",
            "Share bytes streamed to readers",
            registry=self.registry,
        )
        self.commits = Counter(
            "tally_secret_store_commits_total", "Datasets committed", registry=self.registry
        )
        self.collected = Counter(
            "tally_secret_store_gc_removed_total",
            "Objects removed by garbage collection",
            ["kind"],
            registry=self.registry,
        )


@dataclass
class StoreContext:
    """The secret-store's long-lived resources."""

    settings: SecretStoreSettings
    engine: Engine
    sessions: sessionmaker[Session]
    blobs: BlobStore
    auth: TokenAuthenticator
    metrics: StoreMetrics
    inline_reads: bool = False
    """Run hot metadata reads on the event loop: true for SQLite, whose queries are
    in-process CPU work (a worker thread only adds hand-offs); false for PostgreSQL,
    whose queries wait on the network."""
    column_cache: dict[tuple[str, str], Any] = field(default_factory=dict)
    """Columns of datasets by (id, spec digest): immutable, so safe to keep (lookup.py)."""

    def check_ready(self) -> None:
        """Raise if the database or the blob store is unreachable."""
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        self.blobs.ping()

    def close(self) -> None:
        """Release database connections."""
        self.engine.dispose()


def make_blob_store(settings: SecretStoreSettings) -> BlobStore:
    """S3 when ``s3_endpoint`` is set, else the local directory."""
    return blobstore.make_blob_store(settings, settings.blob_dir)


def build_context(
    settings: SecretStoreSettings, metrics: StoreMetrics | None = None
) -> StoreContext:
    """Connect to the database (migrating it when configured) and the blob store."""
    if settings.migrate_on_start:
        upgrade_database(settings.database_url, MIGRATIONS)
    engine = make_engine(settings.database_url)
    return StoreContext(
        settings=settings,
        engine=engine,
        sessions=make_sessionmaker(engine),
        blobs=make_blob_store(settings),
        auth=make_authenticator(settings.tokens, settings.env, settings),
        metrics=metrics or StoreMetrics(),
        inline_reads=is_sqlite(settings.database_url),
    )
