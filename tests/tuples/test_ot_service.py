"""The tuple-service with ``TALLY_TUPLES_GENERATOR=ot``: three processes on SQLite, tuples by OT."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.tuples.cluster import Cluster
from tests.tuples.relations import EVERY_KIND, check_every_kind, sources


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    running = Cluster(tmp_path_factory.mktemp("ot"), chunk_size=1024, generator="ot").start_all()
    try:
        yield running
    finally:
        running.stop()


def test_ot_tuples_from_three_processes_reconstruct(cluster: Cluster) -> None:
    response = cluster.post(
        0,
        "/v1/reservations",
        {"job_id": "ot", "tuples": EVERY_KIND, "generate_missing": True},
    )
    assert response.status_code == 201, response.text
    # shuffles included: each is generated when every party's reader asks for it
    check_every_kind(sources(cluster, response.json()["reservation_id"]))
