"""Killing a tuple-service mid-reservation: no range is handed out twice, none is lost for good."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.tuples.cluster import Cluster

CHUNK = 1024
CHUNKS = 60


def totals(cluster: Cluster, party: int) -> dict[str, int]:
    pools = {p["kind"]: p for p in cluster.get(party, "/v1/pools").json()}
    triples = pools["triples"]
    return {k: triples[k] for k in ("available", "reserved", "consumed")}


def storm(cluster: Cluster, jobs: int, victim: int, after: float) -> list[str]:
    """``jobs`` reservations started ``after / 10`` s apart; SIGKILL ``victim`` once 3 are in."""
    accepted: list[str] = []

    def one(job: int) -> None:
        try:
            reply = cluster.post(
                0, "/v1/reservations", {"job_id": f"s{job}", "tuples": {"triples": CHUNK}}, 20
            )
        except httpx.HTTPError:
            return
        if reply.status_code == 201:
            accepted.append(reply.json()["reservation_id"])

    threads = [threading.Thread(target=one, args=(j,)) for j in range(jobs)]

    def launch() -> None:  # staggered, so the storm lasts longer than the time to kill
        for thread in threads:
            thread.start()
            time.sleep(after / 10)

    launcher = threading.Thread(target=launch)
    launcher.start()
    deadline = time.monotonic() + 30
    while len(accepted) < 3 and time.monotonic() < deadline:
        time.sleep(0.002)
    cluster.kill(victim)
    launcher.join(60)
    for thread in threads:
        thread.join(60)
    return accepted


def settle(cluster: Cluster, timeout: float = 30.0) -> list[dict[str, int]]:
    """Wait until every party reports the same totals (the leader's retries finished)."""
    deadline = time.monotonic() + timeout
    while True:
        seen = [totals(cluster, p) for p in range(3)]
        if seen[0] == seen[1] == seen[2] or time.monotonic() > deadline:
            return seen
        time.sleep(0.3)


@pytest.mark.parametrize("victim", [0, 1], ids=["leader", "follower"])
def test_kill_and_restart_mid_reservation(tmp_path: Path, victim: int) -> None:
    cluster = Cluster(tmp_path, chunk_size=CHUNK).start_all()
    try:
        reply = cluster.post(0, "/v1/pools/triples/generate", {"tuples": CHUNKS * CHUNK})
        assert reply.status_code == 200
        accepted = storm(cluster, jobs=40, victim=victim, after=0.15)
        assert len(accepted) < 40  # the kill landed in the middle of the storm
        cluster.start(victim)
        cluster.wait_ready()
        seen = settle(cluster)
        assert seen[0] == seen[1] == seen[2], seen
        assert sum(seen[0].values()) == CHUNKS * CHUNK  # nothing lost
        # Every reservation the leader confirmed is active, identical everywhere, disjoint;
        # some confirmations may have been lost with the leader, so take its list.
        active = cluster.get(0, "/v1/reservations?state=active").json()
        assert set(accepted) <= set(active)
        for party in (1, 2):
            assert sorted(cluster.get(party, "/v1/reservations?state=active").json()) == sorted(
                active
            )
        held: set[int] = set()
        for reservation_id in active:
            views = [cluster.get(p, f"/v1/reservations/{reservation_id}").json() for p in range(3)]
            assert views[0]["state"] == "active"
            assert views[0] == views[1] == views[2]
            chunks = {
                c
                for first, last in views[0]["kinds"]["triples"]["ranges"]
                for c in range(first, last + 1)
            }
            assert not chunks & held
            held |= chunks
        assert seen[0]["reserved"] == len(held) * CHUNK
        # What is free now can be reserved (nothing is stuck reserved at a follower).
        free = seen[0]["available"]
        if free:
            reply = cluster.post(
                0, "/v1/reservations", {"job_id": "rest", "tuples": {"triples": free}}
            )
            assert reply.status_code == 201, reply.text
    finally:
        cluster.stop()
