"""Command line: ``python -m tally.secret_store serve|migrate``.

``serve`` runs the API with uvicorn (httptools and uvloop when installed);
``migrate`` applies the Alembic migrations and exits. Both read the
``TALLY_SECRET_STORE_*`` settings.
"""

from __future__ import annotations

import argparse
import os

from tally.common.db import upgrade_database
from tally.secret_store.context import MIGRATIONS
from tally.secret_store.settings import SecretStoreSettings


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and run the chosen command."""
    parser = argparse.ArgumentParser(prog="python -m tally.secret_store")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the HTTP API")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8100)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument("--log-level", default="info")
    commands.add_parser("migrate", help="upgrade the metadata database to the newest schema")
    args = parser.parse_args(argv)
    settings = SecretStoreSettings()
    if args.command == "migrate":
        upgrade_database(settings.database_url, MIGRATIONS)
        return
    if settings.migrate_on_start and args.workers > 1:
        # Migrate once here rather than racing in every worker process.
        upgrade_database(settings.database_url, MIGRATIONS)
        os.environ["TALLY_SECRET_STORE_MIGRATE_ON_START"] = "false"
    import gc

    import uvicorn

    import tally.secret_store.app  # noqa: F401 - loaded before freezing

    # Long-lived start-up objects leave the collector's view, and young collections
    # run less often: fewer pauses in the metadata path's latency tail.
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    uvicorn.run(
        "tally.secret_store.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
        http="auto",
        loop="auto",
        access_log=False,
        **settings.server_tls(),
    )


if __name__ == "__main__":
    main()
