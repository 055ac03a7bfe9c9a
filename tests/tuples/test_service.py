"""The tuple-service as three OS processes on loopback: hm3 tuples, reservations, restarts."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tally.mpc.arithmetic import multiply
from tally.mpc.compare import less_than_zero
from tally.mpc.party import Party
from tally.mpc.reserved import HttpTupleReader, ReservedSource
from tally.mpc.ring import decode_int, encode_int, reconstruct, split
from tally.mpc.shuffle import shuffle_columns
from tally.mpc.transport import InProcessHub
from tally.mpc.tuples import TupleReuseError
from tests.tuples.cluster import MONITOR_TOKEN, Cluster, databases_for
from tests.tuples.relations import EVERY_KIND, check_every_kind, sources

CHUNK = 4096


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """Three services with SQLite files, or with a database each on a real PostgreSQL."""
    urls = databases_for(request)
    running = Cluster(
        tmp_path_factory.mktemp("tuples"), database_urls=urls, chunk_size=CHUNK
    ).start_all()
    try:
        yield running
    finally:
        running.stop()


def reserve(cluster: Cluster, job: str, tuples: dict[str, int]) -> str:
    response = cluster.post(
        0, "/v1/reservations", {"job_id": job, "tuples": tuples, "generate_missing": True}
    )
    assert response.status_code == 201, response.text
    reservation_id: str = response.json()["reservation_id"]
    return reservation_id


def test_every_kind_reconstructs_from_three_processes(cluster: Cluster) -> None:
    check_every_kind(sources(cluster, reserve(cluster, "every-kind", EVERY_KIND)))


def test_a_monitoring_token_reads_pools_but_never_tuple_shares(cluster: Cluster) -> None:
    reservation_id = reserve(cluster, "scoped", {"triples": 10})
    monitor = {"Authorization": f"Bearer {MONITOR_TOKEN}"}
    assert httpx.get(cluster.url(1) + "/v1/pools", headers=monitor).status_code == 200
    # before, any tuple-service token could stream tuple shares (regression)
    for path in (
        f"/v1/reservations/{reservation_id}/tuples/triples?offset=0&count=10",
        f"/v1/reservations/{reservation_id}",
        "/v1/reservations",
    ):
        refused = httpx.get(cluster.url(1) + path, headers=monitor)
        assert refused.status_code == 403 and "'tuples'" in refused.json()["detail"], path
    posted = httpx.post(cluster.url(0) + "/v1/reservations", headers=monitor, json={})
    assert posted.status_code == 403


def test_one_request_cannot_fill_every_partys_disk(cluster: Cluster) -> None:
    def generated() -> list[dict[str, int]]:
        return [
            {pool["kind"]: pool["generated"] for pool in cluster.get(p, "/v1/pools").json()}
            for p in range(3)
        ]

    before = generated()
    # before, generate_missing generated whatever a job asked for (regression)
    huge = {"job_id": "huge", "tuples": {"triples": 10**9}, "generate_missing": True}
    refused = cluster.post(0, "/v1/reservations", huge)
    assert refused.status_code == 413 and "max_generate" in refused.json()["detail"]
    direct = cluster.post(0, "/v1/pools/triples/generate", {"tuples": 10**9})
    assert direct.status_code == 413
    assert generated() == before  # nothing was generated anywhere


def test_the_reservation_is_the_same_at_every_party(cluster: Cluster) -> None:
    reservation_id = reserve(cluster, "same", {"triples": 3 * CHUNK, "dabits": 10})
    views = [cluster.get(p, f"/v1/reservations/{reservation_id}").json() for p in range(3)]
    assert views[0]["state"] == "active"
    assert views[0] == views[1] == views[2]


def test_tuples_are_never_served_twice(cluster: Cluster) -> None:
    reservation_id = reserve(cluster, "twice", {"triples": 100})
    first = sources(cluster, reservation_id)[1]
    first.triples(60)
    again = sources(cluster, reservation_id)[1]  # a restarted worker that forgot its cursor
    with pytest.raises(TupleReuseError):
        again.triples(10)
    again.cursors["triples"] = 60
    again.triples(40)
    response = cluster.get(
        1, f"/v1/reservations/{reservation_id}/tuples/triples?offset=90&count=20"
    )
    assert response.status_code == 409


def chunk_sets(cluster: Cluster, party: int, ids: list[str]) -> dict[str, set[int]]:
    out = {}
    for reservation_id in ids:
        view = cluster.get(party, f"/v1/reservations/{reservation_id}").json()
        out[reservation_id] = {
            chunk
            for kind in view["kinds"].values()
            for first, last in kind["ranges"]
            for chunk in range(first, last + 1)
        }
    return out


def test_fifty_concurrent_reservations_never_overlap(cluster: Cluster) -> None:
    assert cluster.post(0, "/v1/pools/triples/generate", {"tuples": 60 * CHUNK}).status_code == 200
    with ThreadPoolExecutor(max_workers=50) as pool:
        replies = list(
            pool.map(
                lambda job: cluster.post(
                    0, "/v1/reservations", {"job_id": f"c{job}", "tuples": {"triples": CHUNK}}
                ),
                range(50),
            )
        )
    assert all(r.status_code == 201 for r in replies), [
        r.text for r in replies if r.status_code != 201
    ]
    ids = [r.json()["reservation_id"] for r in replies]
    for party in range(3):
        sets = chunk_sets(cluster, party, ids)
        assert sum(len(s) for s in sets.values()) == len(set().union(*sets.values()))
        assert sets == chunk_sets(cluster, 0, ids)


def test_release_frees_what_no_party_consumed(cluster: Cluster) -> None:
    reservation_id = reserve(cluster, "release", {"triples": 2 * CHUNK})
    view = cluster.get(0, f"/v1/reservations/{reservation_id}").json()
    first, last = (
        view["kinds"]["triples"]["ranges"][0][0],
        view["kinds"]["triples"]["ranges"][-1][1],
    )
    sources(cluster, reservation_id)[2].triples(10)  # only party 2 consumed chunk `first`
    reply = cluster.post(0, f"/v1/reservations/{reservation_id}/release", {})
    assert reply.json() == {"released": True}
    for party in range(3):
        assert (
            cluster.get(party, f"/v1/reservations/{reservation_id}").json()["state"] == "released"
        )
    again = reserve(cluster, "after-release", {"triples": 200 * CHUNK})
    reused = chunk_sets(cluster, 0, [again])[again]
    assert first not in reused  # consumed at one party: never handed out again
    assert last in reused  # unconsumed everywhere: back in the pool
    cluster.post(0, f"/v1/reservations/{again}/release", {})


def test_a_client_chosen_id_makes_reserving_idempotent(cluster: Cluster) -> None:
    chosen = "0123456789abcdef0123456789abcdef"
    body = {"job_id": "chosen", "tuples": {"triples": 10, "shuffle": 2}, "reservation_id": chosen}
    first = cluster.post(0, "/v1/reservations", {**body, "generate_missing": True})
    assert first.status_code == 201, first.text
    again = cluster.post(0, "/v1/reservations", {**body, "tuples": {"triples": 999}})
    assert again.status_code == 200 and again.json() == first.json()  # unchanged, not more
    views = [cluster.get(p, f"/v1/reservations/{chosen}").json() for p in range(3)]
    assert all(view["kinds"] == views[0]["kinds"] for view in views)
    assert all(
        cluster.get(p, "/v1/reservations?job_id=chosen").json() == [chosen] for p in range(3)
    )
    assert cluster.get(0, "/v1/reservations?job_id=another").json() == []
    other = cluster.post(0, "/v1/reservations", {**body, "job_id": "another"})
    assert other.status_code == 409 and "another job" in other.json()["detail"]
    assert cluster.post(0, f"/v1/reservations/{chosen}/release", {}).status_code == 200


def test_a_reservation_a_follower_cannot_honour_is_refused_and_released(cluster: Cluster) -> None:
    cluster.kill(2)
    try:
        reply = cluster.post(0, "/v1/reservations", {"job_id": "down", "tuples": {"triples": 10}})
        assert reply.status_code == 409
        assert "party 2" in reply.json()["detail"]
    finally:
        cluster.start(2)
        cluster.wait_ready(parties=range(2, 3))
    deadline = time.monotonic() + 15
    while True:  # the leader reconnects to the restarted follower within about a second
        reply = cluster.post(
            0, "/v1/reservations", {"job_id": "up-again", "tuples": {"triples": 10}}
        )
        if reply.status_code == 201 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert reply.status_code == 201, reply.text
    reservation_id = reply.json()["reservation_id"]
    assert cluster.get(2, f"/v1/reservations/{reservation_id}").json()["state"] == "active"
    # A new generation session is opened with the restarted follower.
    assert cluster.post(0, "/v1/pools/dabits/generate", {"tuples": 100}).status_code == 200


def test_engine_runs_on_reserved_tuples(cluster: Cluster) -> None:
    rng = np.random.default_rng(3)
    x = rng.integers(-(2**40), 2**40, 300)
    y = rng.integers(-(2**20), 2**20, 300)
    xs, ys = split(encode_int(x), 3, rng), split(encode_int(y), 3, rng)
    table = split(encode_int(np.stack([x, np.arange(300)], axis=1)), 3, rng)
    wants = {"triples": 300, "edabits:64": 300, "bit_triples": 2000, "dabits": 1000, "shuffle": 1}
    reservation_id = reserve(cluster, "engine", wants)
    hub = InProcessHub(3, timeout=60)
    results: list[Any] = [None] * 3

    def run(index: int) -> None:
        reader = HttpTupleReader(cluster.url(index), reservation_id, token=cluster.token(index))
        source = ReservedSource(index, 3, reader)
        party = Party(index, hub.transport(index), source)
        (product,) = multiply(party, [(xs[index], ys[index])])
        results[index] = (
            product,
            less_than_zero(party, xs[index]),
            shuffle_columns(party, table[index]),
        )

    threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    np.testing.assert_array_equal(decode_int(reconstruct([r[0] for r in results])), x * y)
    np.testing.assert_array_equal(reconstruct([r[1] for r in results]), (x < 0).astype(np.uint64))
    shuffled = decode_int(reconstruct([r[2] for r in results]))
    np.testing.assert_array_equal(shuffled[:, 0], x[shuffled[:, 1]])


def test_pools_and_metrics_report_availability(cluster: Cluster) -> None:
    pools = {p["kind"]: p for p in cluster.get(0, "/v1/pools").json()}
    assert pools["triples"]["available"] > 0
    assert pools["triples"]["generated"] > 0
    text = cluster.get(1, "/metrics").text
    assert 'tally_tuples_available{kind="triples"}' in text
    assert cluster.get(1, "/healthz").json() == {"status": "ok"}


def test_unknown_kinds_are_a_400(cluster: Cluster) -> None:
    reply = cluster.post(0, "/v1/reservations", {"job_id": "x", "tuples": {"quads": 3}})
    assert reply.status_code == 400
    assert reply.json()["error"] == "bad_request"


def test_background_replenishment_keeps_pools_above_low_water(tmp_path: Path) -> None:
    pools = [{"kind": "triples", "low_water": 3 * CHUNK, "batch": 2 * CHUNK}]
    running = Cluster(tmp_path, chunk_size=CHUNK, pools=pools, replenish=True).start_all()
    try:
        # Under load a first session can time out (30 s) and is retried in a new one.
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            available = {p["kind"]: p["available"] for p in running.get(0, "/v1/pools").json()}
            if available.get("triples", 0) >= 3 * CHUNK:
                break
            time.sleep(0.2)
        assert available["triples"] >= 3 * CHUNK
        for party in (1, 2):
            stats = {p["kind"]: p for p in running.get(party, "/v1/pools").json()}
            assert stats["triples"]["available"] >= 3 * CHUNK
    finally:
        running.stop()


@pytest.mark.parametrize("down", [1, 2])
def test_generating_with_a_follower_down_fails_in_seconds_not_a_round_timeout(
    tmp_path: Path, down: int
) -> None:
    """Regression: with party 2 down, party 1's key agreement waited for party 2's key
    message for the whole round timeout (30 s here), and the leader with it (twice:
    the generation is retried in a new session).  Now the leader closes the session
    at every party as soon as one cannot open it."""
    running = Cluster(tmp_path, chunk_size=CHUNK).start_all()
    try:
        running.kill(down)
        started = time.monotonic()
        reply = running.post(0, "/v1/pools/triples/generate", {"tuples": CHUNK}, 120)
        elapsed = time.monotonic() - started
        assert reply.status_code >= 400, reply.text
        assert elapsed < 10.0, elapsed
        pools = {p["kind"]: p for p in running.get(0, "/v1/pools").json()}
        assert pools.get("triples", {}).get("available", 0) == 0  # nothing half-made served
    finally:
        running.stop()
