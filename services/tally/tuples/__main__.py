"""Run one party's tuple-service: ``python -m tally.tuples [serve|migrate]``.

``serve`` (the default) migrates the chunk index (unless ``MIGRATE_ON_START`` is
off), starts TupleLink (mutual TLS with this party's certificate; plaintext with a
warning in development only) and the REST API.  ``migrate`` upgrades the index and
exits.  Settings come from ``TALLY_TUPLES_*``.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading

import uvicorn

from tally.common.blobstore import make_blob_store
from tally.common.consortium import PeerDirectory
from tally.common.db import make_engine
from tally.common.settings import ConfigurationError
from tally.common.tls import PeerTLS, party_name
from tally.tuples.app import create_app
from tally.tuples.link import connect, connect_dealer
from tally.tuples.node import TupleNode
from tally.tuples.server import serve_link
from tally.tuples.settings import TuplesSettings
from tally.tuples.store import ChunkStore, migrate

log = logging.getLogger("tally.tuples")


def load_tls(settings: TuplesSettings) -> PeerTLS | None:
    """This party's TupleLink certificate, or None (development: plaintext, with a warning)."""
    if settings.tls_ca is None or settings.tls_cert is None or settings.tls_key is None:
        log.warning(
            "TupleLink runs WITHOUT TLS (development mode): peers are not authenticated and "
            "tuple shares cross the network in the clear; set TALLY_TUPLES_TLS_CA, _TLS_CERT "
            "and _TLS_KEY"
        )
        return None
    tls = PeerTLS.load(settings.tls_ca, settings.tls_cert, settings.tls_key, "TupleLink")
    if tls.name != party_name(settings.party):
        raise ConfigurationError(
            f"the TupleLink certificate names {tls.name!r}, but this is party {settings.party} "
            f"(expected {party_name(settings.party)!r})"
        )
    return tls


def build(settings: TuplesSettings) -> TupleNode:
    """The node of one party, its TupleLink server started and (leader) its background task."""
    if settings.migrate_on_start:
        migrate(settings.database_url)
    tls = load_tls(settings)
    store = ChunkStore(
        make_engine(settings.database_url), make_blob_store(settings, settings.blob_dir)
    )
    dealer = None
    if settings.generator == "dealer":
        dealer = connect_dealer(settings.dealer, settings.dealer_name, tls)
    node = TupleNode(settings, store, connect(settings.peers, settings.party, tls), dealer)
    node.link_server = serve_link(node, settings.listen_address, tls)
    if settings.is_leader:
        threading.Thread(target=node.run_background, name="tuples-pools", daemon=True).start()
    else:
        node.ready.set()
    return node


def watch_consortium(settings: TuplesSettings, interval_s: float = 5.0) -> threading.Event:
    """Restart the service (SIGTERM to itself) once the consortium document's peers change.

    TupleLink connections are made at start-up, so an edit of the Consortium is applied
    by a restart: Kubernetes starts the container again and it reads the new document.
    Generation runs are resumable and reservations durable, so nothing is served twice.
    An invalid edit is logged and ignored.  Returns the event that stops the watch.
    """
    stop = threading.Event()
    if settings.consortium_file is None:
        return stop
    directory = PeerDirectory(
        settings.peers, path=settings.consortium_file, key="tupleLink", party=settings.party
    )

    def watch() -> None:
        while not stop.wait(interval_s):
            if directory.current() != settings.peers or directory.pending_restart:
                log.warning(
                    "the consortium document changed this party's TupleLink peers: "
                    "restarting to apply it"
                )
                os.kill(os.getpid(), signal.SIGTERM)
                return

    threading.Thread(target=watch, name="tuples-consortium", daemon=True).start()
    return stop


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tally.tuples")
    parser.add_argument("command", nargs="?", default="serve", choices=["serve", "migrate"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    settings = TuplesSettings()
    if args.command == "migrate":
        migrate(settings.database_url)
        return
    node = build(settings)
    watch_consortium(settings)
    try:
        uvicorn.run(
            create_app(node),
            host=settings.http_host,
            port=settings.http_port,
            log_level="warning",
            **settings.server_tls(),
        )
    finally:
        node.stop()
        if node.link_server is not None:
            node.link_server.stop(grace=1.0)


if __name__ == "__main__":
    main()
