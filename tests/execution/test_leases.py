"""Lease chains against an in-memory tuple-service: the same leases at every party, never reused.

``FakeService`` keeps what the real tuple-service keeps for this purpose: reservations by
id (created by party 0, visible to every party), and per reservation and kind a served
high-water mark below which nothing is served again.  Tuples are fake bytes that encode
(reservation, offset), so the test can see exactly which tuples each party drew.
"""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tally.execution.leases import LeasedSource, LeasePolicy, _BulkReader, lease_id, plan_id
from tally.execution.ledger import TupleLedger
from tally.mpc.offline.layout import parse_kind
from tally.mpc.offline.wire import encode_shuffle
from tally.mpc.reserved import TupleServiceError
from tally.mpc.tuples import Dealer, TupleReuseError

JOB = "job"


class FakeService:
    """Reservations and served marks shared by three parties' clients."""

    def __init__(self) -> None:
        self.reservations: dict[str, dict[str, Any]] = {}
        self.marks: dict[tuple[int, str, str], int] = {}
        self.shuffled: list[tuple[int, str, int, int, str]] = []
        self.lock = threading.Lock()

    def client(self, party: int) -> FakeClient:
        return FakeClient(self, party)


class FakeClient:
    def __init__(self, service: FakeService, party: int) -> None:
        self.service = service
        self.party = party

    def reserve(
        self, reservation_id: str, job_id: str, wants: Mapping[str, int], timeout: float
    ) -> dict[str, Any]:
        assert self.party == 0, "only party 0 reserves"
        with self.service.lock:
            view = {
                "reservation_id": reservation_id,
                "state": "active",
                "kinds": {k: {"count": c} for k, c in wants.items()},
            }
            return self.service.reservations.setdefault(reservation_id, view)

    def wait(
        self, reservation_id: str, timeout: float, what: str, interrupted: Any = None
    ) -> dict[str, Any]:
        error = interrupted() if interrupted is not None else None
        if error is not None:
            raise error
        view = self.service.reservations.get(reservation_id)
        if view is None:
            raise TupleServiceError(f"{what} did not arrive")
        return view

    def _serve(self, reservation_id: str, kind: str, offset: int, count: int) -> None:
        key = (self.party, reservation_id, kind)
        with self.service.lock:
            if offset < self.service.marks.get(key, 0):
                raise TupleReuseError(f"{kind} {offset} of {reservation_id} was served")
            reserved = self.service.reservations[reservation_id]["kinds"][kind]["count"]
            assert offset + count <= reserved
            self.service.marks[key] = offset + count

    def read(self, reservation_id: str, kind: str, offset: int, count: int) -> bytes:
        self._serve(reservation_id, kind, offset, count)
        tag = int(reservation_id[:8], 16) << 32
        values = np.arange(offset, offset + count, dtype=np.uint64) + np.uint64(tag)
        return b"".join(
            values.astype(dtype).tobytes() if dtype.itemsize == 8 else bytes(count)
            for dtype in parse_kind(kind).sections
        )

    def read_into(
        self, reservation_id: str, kind: str, offset: int, count: int, targets: list[memoryview]
    ) -> None:
        data, position = self.read(reservation_id, kind, offset, count), 0
        for target in targets:
            target[:] = data[position : position + target.nbytes]
            position += target.nbytes
        assert position == len(data)

    def shuffle(self, reservation_id: str, index: int, rows: int, kinds: str) -> bytes:
        self._serve(reservation_id, "shuffle", index, 1)
        self.service.shuffled.append((self.party, reservation_id, index, rows, kinds))
        return encode_shuffle(Dealer(3, seed=index).source(self.party).shuffle(rows, kinds))


def sources(service: FakeService, root: Path, epoch: int = 0) -> list[LeasedSource]:
    policy = LeasePolicy(minimum=100, maximum=10_000, wait_s=1.0)
    out = []
    for party in range(3):
        ledger = TupleLedger(root / f"party{party}", JOB, 0)
        ledger.open_epoch(epoch)
        source = LeasedSource(party, 3, service.client(party), ledger, JOB, 0, epoch, policy)  # type: ignore[arg-type]
        out.append(source)
    return out


def drawn(source: LeasedSource) -> list[tuple[str, str, int, int]]:
    return [(e["lease"], e["kind"], e["offset"], e["count"]) for e in source.ledger.entries()]


def test_parties_walk_the_same_leases_and_extend_at_the_same_request(tmp_path: Path) -> None:
    service = FakeService()
    service.client(0).reserve(plan_id(JOB, 0), JOB, {"triples": 250}, 1.0)
    parties = sources(service, tmp_path)
    for source in parties:  # party 0 first: followers find the leases it made
        for count in (100, 100, 100, 30, 500, 40):
            a, _, _ = source.triples(count)
            assert len(a) == count
    ledgers = [drawn(source) for source in parties]
    assert ledgers[0] == ledgers[1] == ledgers[2]
    # 250 planned: the third 100 does not fit; extension n holds max(request, 100 · 2^n)
    chain = [lease_id(JOB, 0, 0, "triples", n) for n in range(4)]
    assert [lease for lease, *_ in ledgers[0]] == [plan_id(JOB, 0)] * 2 + chain
    sizes = [service.reservations[lease]["kinds"]["triples"]["count"] for lease in chain]
    assert sizes == [100, 200, 500, 800]
    # within a lease, offsets follow on: nothing drawn twice
    assert [offset for _, _, offset, _ in ledgers[0]] == [0, 100, 0, 0, 0, 0]


def test_a_resume_in_a_new_epoch_never_touches_what_an_earlier_epoch_served(
    tmp_path: Path,
) -> None:
    service = FakeService()
    service.client(0).reserve(plan_id(JOB, 0), JOB, {"triples": 1000}, 1.0)
    for source in sources(service, tmp_path, epoch=0):
        source.triples(300)
    resumed = sources(service, tmp_path, epoch=1)
    for source in resumed:
        source.triples(300)
    epoch_one = {entry[0] for entry in drawn(resumed[1]) if entry[0] != plan_id(JOB, 0)}
    assert epoch_one == {lease_id(JOB, 0, 1, "triples", 0)}
    with pytest.raises(RuntimeError, match="already opened"):
        TupleLedger(tmp_path / "party1", JOB, 0).open_epoch(1)


def test_prefetched_material_is_served_from_memory_and_a_wrong_shuffle_guess_extends(
    tmp_path: Path,
) -> None:
    service = FakeService()
    wants = {"triples": 200, "dabits": 64, "shuffle": 2}
    service.client(0).reserve(plan_id(JOB, 0), JOB, wants, 1.0)
    parties = sources(service, tmp_path)
    predicted = [(10, "aa"), (10, "ax")]
    for source in parties:
        source.prefetch(predicted, limit=1 << 20, block=64)
        assert service.marks[(source.party, plan_id(JOB, 0), "triples")] == 200  # read ahead
        assert len(source.triples(150)[0]) == 150
        assert len(source.dabits(64)[0]) == 64
        source.shuffle(10, "aa")
    fetched = len(service.shuffled)
    assert fetched == 6  # both predicted shuffles, by every party, before they were asked for
    for source in parties:
        source.shuffle(12, "aa")  # not the predicted (10, "ax"): an extension lease serves it
    leases = [[entry[0] for entry in drawn(source) if entry[1] == "shuffle"] for source in parties]
    expected = [plan_id(JOB, 0), lease_id(JOB, 0, 0, "shuffle", 0)]
    assert leases[0] == leases[1] == leases[2] == expected
    assert all(lease == expected[1] for _, lease, *_ in service.shuffled[fetched:])


def test_a_follower_stops_waiting_when_party_0_is_gone(tmp_path: Path) -> None:
    service = FakeService()
    service.client(0).reserve(plan_id(JOB, 0), JOB, {}, 1.0)
    follower = sources(service, tmp_path)[1]
    follower.interrupted = lambda: ConnectionError("party 0 left")
    with pytest.raises(ConnectionError, match="party 0 left"):
        follower.triples(10)


class _Bodies(http.server.BaseHTTPRequestHandler):
    """Answers by path: a body of known bytes, a reuse refusal, a short body; HTTP/1.1,
    and ``/v1/idle`` answers and then drops the connection as an idle keep-alive timeout
    would, without saying so."""

    protocol_version = "HTTP/1.1"
    requests = 0

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        type(self).requests += 1
        if self.path.startswith("/v1/idle"):
            body = bytes(range(256)) * 64
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            self.close_connection = True
            return
        if self.path.startswith("/v1/ok"):
            body = bytes(range(256)) * 64
            self.send_response(200)
        elif self.path.startswith("/v1/reused"):
            body = json.dumps({"detail": "tuples_reused: served before"}).encode()
            self.send_response(409)
        elif self.path.startswith("/v1/short"):
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.write(b"x" * 10)
            self.wfile.flush()
            self.close_connection = True
            return
        else:
            body = json.dumps({"detail": "no reservation r"}).encode()
            self.send_response(404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def bodies() -> Any:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Bodies)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_bulk_reads_fill_the_targets_in_order_and_report_refusals(bodies: str) -> None:
    reader = _BulkReader(bodies, {"Authorization": "Bearer t"}, 5.0)
    expected = np.frombuffer(bytes(range(256)) * 64, np.uint8)
    whole = reader.get_into("/v1/ok", {"offset": 0}, None)
    assert np.array_equal(whole, expected)
    first, second = np.zeros(1000, np.uint8), np.zeros(len(expected) - 1000, np.uint8)
    reader.get_into("/v1/ok", {}, [memoryview(first), memoryview(second)])
    assert np.array_equal(np.concatenate([first, second]), expected)
    with pytest.raises(TupleServiceError, match="expected 10"):
        reader.get_into("/v1/ok", {}, [memoryview(np.zeros(10, np.uint8))])
    with pytest.raises(TupleReuseError, match="served before"):
        reader.get_into("/v1/reused", {}, None)
    with pytest.raises(TupleServiceError, match="404: no reservation r"):
        reader.get_into("/v1/missing", {}, None)
    with pytest.raises(TupleServiceError, match="ended a body early"):
        reader.get_into("/v1/short", {}, None)
    assert np.array_equal(reader.get_into("/v1/ok", {}, None), expected)  # reconnects
    reader.close()


def test_a_keep_alive_connection_the_service_dropped_is_replaced(bodies: str) -> None:
    reader = _BulkReader(bodies, {}, 5.0)
    expected = np.frombuffer(bytes(range(256)) * 64, np.uint8)
    assert np.array_equal(reader.get_into("/v1/idle", {}, None), expected)
    time.sleep(0.2)  # the server has closed its end by now
    before = _Bodies.requests
    assert np.array_equal(reader.get_into("/v1/ok", {}, None), expected)
    assert _Bodies.requests == before + 1  # asked again once, served once
    reader.close()


def test_bulk_reads_name_an_unreachable_service() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    reader = _BulkReader(f"http://127.0.0.1:{port}", {}, 2.0)
    with pytest.raises(TupleServiceError, match="unreachable"):
        reader.get_into("/v1/ok", {}, None)
    with pytest.raises(ValueError, match="http"):
        _BulkReader("ftp://host", {}, 1.0)
