"""The tuple-service with ``TALLY_TUPLES_GENERATOR=ot``: three processes on SQLite, tuples by OT."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tally.mpc.reserved import HttpTupleReader
from tally.mpc.ring import reconstruct
from tally.mpc.tuples import TupleReuseError
from tests.tuples.cluster import Cluster, databases_for
from tests.tuples.relations import EVERY_KIND, check_every_kind, sources


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """Three ot tuple-services with SQLite files, or a database each on a real PostgreSQL."""
    urls = databases_for(request)
    running = Cluster(
        tmp_path_factory.mktemp("ot"), database_urls=urls, chunk_size=1024, generator="ot"
    ).start_all()
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


def test_a_follower_killed_mid_generation_loses_nothing_and_serves_nothing_twice(
    tmp_path: Path,
) -> None:
    cluster = Cluster(tmp_path, chunk_size=1024, generator="ot").start_all()
    try:
        outcome: list[int] = []

        def generate() -> None:
            try:
                reply = cluster.post(0, "/v1/pools/triples/generate", {"tuples": 400 * 1024}, 120)
                outcome.append(reply.status_code)
            except httpx.HTTPError:
                outcome.append(0)

        thread = threading.Thread(target=generate)
        thread.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the follower is mid-generation: kill it
            pools = {p["kind"]: p for p in cluster.get(1, "/v1/pools").json()}
            # a follower stores each chunk as it is made: two are in, the rest are not
            if pools.get("triples", {}).get("available", 0) >= 2 * 1024:
                break
            time.sleep(0.05)
        free_before = pools.get("triples", {}).get("available", 0)
        cluster.kill(1)
        thread.join(150)
        assert free_before < 400 * 1024, "the kill landed after the generation"
        cluster.start(1)
        cluster.wait_ready()
        # refused with a reason (or done by the leader's one retry in a new session)
        assert outcome in ([409], [200]), outcome
        # a later generation runs in a fresh session (once the leader's channel to the
        # restarted follower is out of its reconnect backoff: a clear 409 until then)
        deadline = time.monotonic() + 30
        while True:
            again = cluster.post(0, "/v1/pools/triples/generate", {"tuples": 4 * 1024}, 60)
            if again.status_code != 409 or time.monotonic() > deadline:
                break
            assert "could not open the session" in again.json()["detail"], again.text
            time.sleep(0.5)
        assert again.status_code == 200, again.text
        free = [
            {p["kind"]: p for p in cluster.get(party, "/v1/pools").json()}["triples"]["available"]
            for party in range(3)
        ]
        # the leader and the live follower agree; the restarted follower may still hold
        # chunks the leader discarded while it was down (never reserved, never served)
        assert free[0] == free[2] >= 4 * 1024 and free[1] >= free[0], free
        body = {"job_id": "after", "tuples": {"triples": 4096}}
        reply = cluster.post(0, "/v1/reservations", body)
        assert reply.status_code == 201, reply.text
        readers = sources(cluster, reply.json()["reservation_id"])
        triples = [reader.triples(4096) for reader in readers]
        a, b, c = (reconstruct([t[k] for t in triples]) for k in range(3))
        np.testing.assert_array_equal(c, a * b)
        # the range is consumed at every party: asking again is refused, never re-served
        with pytest.raises(TupleReuseError, match="already served"):
            HttpTupleReader(
                cluster.url(1), reply.json()["reservation_id"], token=cluster.token(1)
            ).read("triples", 0, 16)
    finally:
        cluster.stop()
