"""Run one party's tuple-service: ``python -m tally.tuples`` (settings from ``TALLY_TUPLES_*``)."""

from __future__ import annotations

import logging
import threading

import uvicorn

from tally.common.blobstore import BlobStore, LocalBlobStore, S3BlobStore
from tally.common.db import make_engine
from tally.tuples.app import create_app
from tally.tuples.link import connect
from tally.tuples.node import TupleNode
from tally.tuples.server import serve_link
from tally.tuples.settings import TuplesSettings
from tally.tuples.store import ChunkStore


def make_blobs(settings: TuplesSettings) -> BlobStore:
    if settings.s3_endpoint:
        return S3BlobStore(
            settings.s3_endpoint,
            settings.s3_access_key,
            settings.s3_secret_key,
            settings.s3_bucket,
            secure=settings.s3_secure,
        )
    return LocalBlobStore(settings.blob_dir)


def build(settings: TuplesSettings) -> TupleNode:
    """The node of one party, its TupleLink server started and (leader) its background task."""
    store = ChunkStore(make_engine(settings.database_url), make_blobs(settings))
    node = TupleNode(settings, store, connect(settings.peers, settings.party))
    node.link_server = serve_link(node, settings.listen_address)
    if settings.is_leader:
        threading.Thread(target=node.run_background, name="tuples-pools", daemon=True).start()
    else:
        node.ready.set()
    return node


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = TuplesSettings()
    node = build(settings)
    try:
        uvicorn.run(
            create_app(node), host=settings.http_host, port=settings.http_port, log_level="warning"
        )
    finally:
        node.stop()
        if node.link_server is not None:
            node.link_server.stop(grace=1.0)


if __name__ == "__main__":
    main()
