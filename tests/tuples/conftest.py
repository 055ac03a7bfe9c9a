"""A dealer-mode deployment shared by the tuple-service tests: three parties and a dealer."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.tuples.cluster import Cluster

DEALT_CHUNK = 4096


@pytest.fixture(scope="session")
def dealt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Three tuple-services with ``generator=dealer`` and the dealer, as four processes (TLS)."""
    running = Cluster(
        tmp_path_factory.mktemp("dealt"), chunk_size=DEALT_CHUNK, generator="dealer"
    ).start_all()
    try:
        yield running
    finally:
        running.stop()
