"""Run one party's execution service: ``python -m tally.execution --port 8300``."""

from __future__ import annotations

import argparse
import logging

import uvicorn

from tally.execution.app import create_app
from tally.execution.settings import ExecutionSettings


def main() -> None:
    """Serve the REST API (and the PartyControl gRPC server from the settings)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8300)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = ExecutionSettings()
    uvicorn.run(
        create_app(settings),
        host=args.host,
        port=args.port,
        log_level="warning",
        **settings.server_tls(),
    )


if __name__ == "__main__":
    main()
