"""Tuples from the party's tuple-service: a job's reservation as a chain of leases per kind.

Party 0 reserves, at its tuple-service, which pushes the same chunk ranges to every
follower's tuple-service (DESIGN §4); every party then streams its own shares of the
same tuples.  A job needs one reservation per worker when the estimate is right, and
more when it is not, so the material of one worker is a sequence of *leases* — each
one tuple-service reservation — that every party walks in the same order:

1. **Plan.** In the ``Reserving`` phase party 0 reserves, for each worker, the
   estimated needs of the whole run (:mod:`tally.execution.planning`) under the id
   :func:`plan_id` (job, worker).  Every party's epoch-0 source starts each kind with
   this reservation, if it holds at least the first request of that kind.
2. **Extension.** When a request of a kind does not fit in what is left of the kind's
   current lease, the source moves to the kind's next lease, number n = 0, 1, 2, …, id
   :func:`lease_id` (job, worker, epoch, kind, n).  Party 0 reserves it (``max(request,
   lease_min · 2^n)`` tuples, capped at ``lease_max``) with that client-chosen id; the
   followers wait until their tuple-service holds it.  The point is deterministic —
   every party makes the same requests in the same order against leases of the same
   size — so nobody is told anything: the ids say it all.  The rest of the old lease
   is left untouched and goes back to the pool on release.
3. **Resume.** Each mesh opens a new *epoch* (:mod:`tally.execution.ledger`); the
   epoch is part of every extension lease id, so a resumed stage draws only from
   reservations no earlier epoch touched.  The tuple-service enforces it as well: it
   never serves a range of a reservation below what it already served, and a chunk
   it served is consumed for good.
4. **Release.** When the job ends (succeeded, failed or cancelled) party 0 releases
   every reservation of the job; chunks no party touched return to the pool.

Before an epoch-0 online phase, :meth:`LeasedSource.prefetch` reads the plan
reservation into memory (up to a byte budget), including the shuffle correlations
whose shapes the dry plan predicts, so the online phase hands out stored shares as
the bare engine does.  A follower waiting for party 0's lease gives up as soon as
``interrupted`` reports party 0's link lost, so the worker rebuilds the mesh.

Every batch is written to the worker's ledger before it is read, so tests can map
each party's consumption onto the tuple-service's chunks.
"""

from __future__ import annotations

import http.client
import json
import logging
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np
from numpy.typing import NDArray

from tally.common.https import client_context
from tally.execution.ledger import LedgerAccess, TupleLedger
from tally.mpc.offline.layout import from_arrays, parse_kind
from tally.mpc.reserved import SHUFFLE, ReservedSource, TupleReader, TupleServiceError
from tally.mpc.ring import Shares
from tally.mpc.tuples import ShuffleShare, TupleReuseError, TupleSource

log = logging.getLogger(__name__)

LEASE_NAMESPACE = uuid.UUID("a3c9e0b2-6a55-4c55-8f1e-2b7d9f0c4e61")
Result = TypeVar("Result")


def plan_id(job_id: str, worker: int) -> str:
    """Id of the reservation party 0 makes for a worker before it starts (equal everywhere)."""
    return uuid.uuid5(LEASE_NAMESPACE, f"plan/{job_id}/{worker}").hex


def lease_id(job_id: str, worker: int, epoch: int, kind: str, number: int) -> str:
    """Id of extension lease ``number`` of ``kind`` in ``epoch`` (equal everywhere)."""
    return uuid.uuid5(LEASE_NAMESPACE, f"lease/{job_id}/{worker}/{epoch}/{kind}/{number}").hex


def _detail(response: httpx.Response) -> str:
    return _detail_of(response.content)


def _detail_of(body: bytes) -> str:
    """The ``detail`` of a JSON error body, else the body's start."""
    try:
        return str(json.loads(body).get("detail", body[:500].decode(errors="replace")))
    except (ValueError, AttributeError):
        return body[:500].decode(errors="replace")


class TupleServiceClient:
    """The tuple-service REST calls the execution service makes (httpx, keep-alive)."""

    def __init__(
        self, base_url: str, token: str = "", timeout: float = 300.0, ca: Path | None = None
    ) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=10.0),
            verify=client_context(ca),
            trust_env=False,
        )
        self._bulk = _BulkReader(self.base_url, headers, timeout, ca)

    def close(self) -> None:
        self._client.close()
        self._bulk.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._client.request(method, path, **kwargs)
        except httpx.HTTPError as error:
            raise TupleServiceError(
                f"tuple-service at {self.base_url} unreachable: {error}"
            ) from None

    def ready(self) -> None:
        """Raise unless the tuple-service answers ``/readyz``."""
        response = self._request("GET", "/readyz")
        if response.status_code != 200:
            raise TupleServiceError(
                f"tuple-service at {self.base_url} is not ready: {_detail(response)}"
            )

    def view(self, reservation_id: str) -> dict[str, Any] | None:
        """A reservation as this party's tuple-service holds it, or None."""
        response = self._request("GET", f"/v1/reservations/{reservation_id}")
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise TupleServiceError(f"tuple-service: {_detail(response)}")
        body: dict[str, Any] = response.json()
        return body

    def wait(
        self,
        reservation_id: str,
        timeout: float,
        what: str,
        interrupted: Callable[[], BaseException | None] | None = None,
    ) -> dict[str, Any]:
        """The reservation once it is active here; raises after ``timeout``, if released,
        or what ``interrupted`` returns (the party that would reserve it is gone)."""
        deadline, pause = time.monotonic() + timeout, 0.002
        while True:
            error = interrupted() if interrupted is not None else None
            if error is not None:
                raise error
            view = self.view(reservation_id)
            if view is not None and view["state"] == "active":
                return view
            if view is not None and view["state"] not in ("pending",):
                raise TupleServiceError(f"{what} is {view['state']}: the job is over here")
            if time.monotonic() > deadline:
                raise TupleServiceError(f"{what} did not arrive within {timeout:.0f} s")
            time.sleep(pause)
            pause = min(pause * 2, 0.05)

    def reserve(
        self, reservation_id: str, job_id: str, wants: Mapping[str, int], timeout: float
    ) -> dict[str, Any]:
        """Leader: reserve ``wants`` under ``reservation_id`` at every party (idempotent)."""
        body = {
            "job_id": job_id,
            "tuples": dict(wants),
            "generate_missing": True,
            "reservation_id": reservation_id,
        }
        attempts = 0
        while True:
            response = self._request("POST", "/v1/reservations", json=body)
            if response.status_code in (200, 201):
                return self.wait(reservation_id, timeout, f"reservation {reservation_id}")
            detail, attempts = _detail(response), attempts + 1
            # another job took the chunks generated for this one: generate again
            if response.status_code == 409 and "are free" in detail and attempts < 4:
                continue
            raise TupleServiceError(f"tuple reservation refused ({response.status_code}): {detail}")

    def issue_job_token(self, job_id: str, ttl_s: float) -> str:
        """A credential for the job's workers: its own reservations only."""
        response = self._request("POST", "/v1/job-tokens", json={"job_id": job_id, "ttl_s": ttl_s})
        if response.status_code != 201:
            raise TupleServiceError(
                f"no tuple-service credential for job {job_id} ({response.status_code}): "
                f"{_detail(response)}"
            )
        return str(response.json()["token"])

    def revoke_job_tokens(self, job_id: str) -> None:
        """Revoke the job's worker credentials (the job has ended)."""
        response = self._request("DELETE", f"/v1/job-tokens/{urllib.parse.quote(job_id, safe='')}")
        if response.status_code != 200:
            raise TupleServiceError(
                f"revoking job {job_id}'s tuple-service credentials ({response.status_code}): "
                f"{_detail(response)}"
            )

    def job_reservations(self, job_id: str, state: str) -> list[str]:
        """Ids of the job's reservations in ``state`` at this party."""
        response = self._request(
            "GET", "/v1/reservations", params={"state": state, "job_id": job_id}
        )
        if response.status_code != 200:
            raise TupleServiceError(f"tuple-service: {_detail(response)}")
        return list(response.json())

    def release(self, reservation_id: str) -> None:
        """Leader: release a reservation at every party (its unconsumed chunks)."""
        response = self._request("POST", f"/v1/reservations/{reservation_id}/release")
        if response.status_code not in (200, 404):
            raise TupleServiceError(f"tuple-service: {_detail(response)}")

    def read(self, reservation_id: str, kind: str, offset: int, count: int) -> NDArray[np.uint8]:
        """This party's sections of tuples [offset, offset + count) of a reservation."""
        path = f"/v1/reservations/{reservation_id}/tuples/{kind}"
        return self._body(path, {"offset": offset, "count": count})

    def read_into(
        self,
        reservation_id: str,
        kind: str,
        offset: int,
        count: int,
        targets: Sequence[memoryview],
    ) -> None:
        """Like :meth:`read`, each section straight into its ``targets`` buffer, in order."""
        path = f"/v1/reservations/{reservation_id}/tuples/{kind}"
        self._bulk.get_into(path, {"offset": offset, "count": count}, targets)

    def shuffle(self, reservation_id: str, index: int, rows: int, kinds: str) -> NDArray[np.uint8]:
        """This party's shuffle correlation ``index`` of a reservation, encoded."""
        path = f"/v1/reservations/{reservation_id}/shuffles/{index}"
        return self._body(path, {"rows": rows, "kinds": kinds})

    def _body(self, path: str, params: Mapping[str, Any]) -> NDArray[np.uint8]:
        body = self._bulk.get_into(path, params, None)
        assert body is not None  # no targets: a new buffer
        return body


class _BulkReader:
    """GETs of large binary bodies straight into numpy buffers (``http.client``, keep-alive).

    httpx hands a body over in 64 KB pieces that are then joined; for the gigabytes a
    job's tuples and shuffle correlations take this reads each body with one
    ``readinto`` per buffer, so the bytes are copied once, by the kernel.
    """

    def __init__(
        self, base_url: str, headers: Mapping[str, str], timeout: float, ca: Path | None = None
    ) -> None:
        url = urllib.parse.urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"tuple-service URL must be http(s)://host[:port], not {base_url!r}")
        self.base_url = base_url
        self._url = url
        self._headers = dict(headers)
        self._timeout = timeout
        self._ca = ca
        self._lock = threading.Lock()
        self._connection: http.client.HTTPConnection | None = None

    def _connect(self) -> http.client.HTTPConnection:
        if self._connection is None:
            url = self._url
            if url.scheme == "https":
                context = client_context(self._ca)
                self._connection = http.client.HTTPSConnection(
                    url.hostname or "", url.port, timeout=self._timeout, context=context
                )
            else:
                self._connection = http.client.HTTPConnection(
                    url.hostname or "", url.port, timeout=self._timeout
                )
        return self._connection

    def _drop(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def close(self) -> None:
        with self._lock:
            self._drop()

    def get_into(
        self, path: str, params: Mapping[str, Any], targets: Sequence[memoryview] | None
    ) -> NDArray[np.uint8] | None:
        """The body of ``GET path?params``, read into ``targets`` (all of it, in order),
        or into a new buffer when ``targets`` is None (then returned)."""
        query = urllib.parse.urlencode(params)
        target = f"{self._url.path.rstrip('/')}{path}?{query}"
        with self._lock:
            try:
                return self._get(target, targets)
            except (OSError, http.client.HTTPException) as error:
                self._drop()
                raise TupleServiceError(
                    f"tuple-service at {self.base_url} unreachable: {error}"
                ) from None

    def _get(self, target: str, targets: Sequence[memoryview] | None) -> NDArray[np.uint8] | None:
        response = self._send(target)
        if response.status != 200:
            body = response.read()
            detail = _detail_of(body)
            if response.status == 409 and b"tuples_reused" in body:
                raise TupleReuseError(detail)
            raise TupleServiceError(f"tuple-service answered {response.status}: {detail}")
        length = int(response.getheader("Content-Length") or -1)
        buffer: NDArray[np.uint8] | None = None
        if targets is None:
            buffer = np.empty(max(length, 0), np.uint8)
            views = [buffer.data]
        else:
            views = list(targets)
        expected = sum(view.nbytes for view in views)
        if length != expected:
            self._drop()  # the body is left unread: the connection cannot serve another
            raise TupleServiceError(f"tuple-service sent {length} bytes, expected {expected}")
        for view in views:
            position = 0
            while position < view.nbytes:
                read = response.readinto(view[position:])
                if not read:
                    self._drop()
                    raise TupleServiceError("the tuple-service ended a body early")
                position += read
        return buffer

    def _send(self, target: str) -> http.client.HTTPResponse:
        """GET ``target`` on the kept connection; once more on a new one if the service had
        closed the idle connection before reading the request (nothing was served)."""
        reused = self._connection is not None
        try:
            return self._request(target)
        except ConnectionError:
            if not reused:
                raise
            self._drop()
            return self._request(target)

    def _request(self, target: str) -> http.client.HTTPResponse:
        connection = self._connect()
        connection.request("GET", target, headers=self._headers)
        return connection.getresponse()


class _LeaseReader:
    """``tally.mpc.reserved.TupleReader`` for one reservation, over a shared client."""

    def __init__(self, client: TupleServiceClient, reservation_id: str) -> None:
        self.client = client
        self.reservation_id = reservation_id

    def read(self, kind: str, offset: int, count: int) -> NDArray[np.uint8]:
        return self.client.read(self.reservation_id, kind, offset, count)

    def read_into(self, kind: str, offset: int, count: int, targets: Sequence[memoryview]) -> None:
        self.client.read_into(self.reservation_id, kind, offset, count, targets)

    def shuffle(self, index: int, rows: int, kinds: str) -> NDArray[np.uint8]:
        return self.client.shuffle(self.reservation_id, index, rows, kinds)


class _Prefetched:
    """A lease reader that serves what :meth:`LeasedSource.prefetch` read, else reads on.

    Each kind's sections are read straight into typed arrays (one per section), and a
    request is served as slices of them: the ``uint64`` sections without a copy, the
    binary sections of daBits and edaBits repacked into planes.  Shuffle correlations
    are kept as read and decoded into views of that buffer.
    """

    def __init__(self, inner: _LeaseReader) -> None:
        self.inner = inner
        self.sections: dict[str, list[NDArray[np.generic]]] = {}
        self.shuffles: dict[int, NDArray[np.uint8]] = {}
        self.bytes = 0

    def load(self, kind: str, count: int, block: int) -> None:
        """Read all ``count`` tuples of ``kind``, ``block`` at a time, into their sections."""
        sections = [np.empty(count, dtype) for dtype in parse_kind(kind).sections]
        for first in range(0, count, block):
            size = min(block, count - first)
            targets = [section[first : first + size].data.cast("B") for section in sections]
            self.inner.read_into(kind, first, size, targets)
        self.sections[kind] = sections
        self.bytes += sum(section.nbytes for section in sections)

    def take(self, kind: str, offset: int, count: int) -> tuple[Shares, ...] | None:
        """Prefetched tuples [offset, offset + count) in the engine's layout, or None."""
        sections = self.sections.get(kind)
        if sections is None:
            return None
        if offset + count > len(sections[0]):
            raise TupleServiceError(f"{kind} tuples [{offset}, {offset + count}) were not read")
        views = [section[offset : offset + count] for section in sections]
        if offset + count == len(sections[0]):  # all handed out: the views keep what is in use
            del self.sections[kind]
        return from_arrays(parse_kind(kind), views, copy=False)

    def read(self, kind: str, offset: int, count: int) -> NDArray[np.uint8]:
        return self.inner.read(kind, offset, count)

    def shuffle(self, index: int, rows: int, kinds: str) -> NDArray[np.uint8]:
        data = self.shuffles.pop(index, None)
        return data if data is not None else self.inner.shuffle(index, rows, kinds)


def _read(source: ReservedSource, kind: str, count: int) -> tuple[Shares, ...]:
    """``count`` tuples of ``kind`` through the source's public methods."""
    parsed = parse_kind(kind)
    if parsed.base == "triples":
        return source.triples(count)
    if parsed.base == "bit_triples":
        return source.bit_triples(count)
    if parsed.base == "dabits":
        return source.dabits(count)
    if parsed.base == "edabits":
        return source.edabits(count, parsed.width)
    return (source.input_masks(count),)


@dataclass
class _Lease:
    """One reservation serving one kind: its size and its reader's cursor."""

    id: str
    kind: str
    count: int
    source: ReservedSource

    @property
    def used(self) -> int:
        return self.source.cursors.get(self.kind, 0)


@dataclass(frozen=True)
class LeasePolicy:
    """Sizes of extension leases, and how long followers wait for one."""

    minimum: int = 1 << 16
    maximum: int = 1 << 24
    wait_s: float = 300.0

    def size(self, number: int, request: int) -> int:
        """Tuples in extension lease ``number`` when the request that needs it is ``request``."""
        return max(request, min(self.minimum << min(number, 40), self.maximum))


class LeasedSource(TupleSource):
    """One worker's tuples in one epoch at this party, lease after lease (module docstring)."""

    def __init__(
        self,
        party: int,
        parties: int,
        client: TupleServiceClient,
        ledger: TupleLedger,
        job_id: str,
        worker: int,
        epoch: int,
        policy: LeasePolicy,
        interrupted: Callable[[], BaseException | None] | None = None,
    ) -> None:
        self.party = party
        self.parties = parties
        self.client = client
        self.ledger = ledger
        self.job_id = job_id
        self.worker = worker
        self.epoch = epoch
        self.policy = policy
        self.leads = party == 0
        self.interrupted = interrupted
        self.generation_seconds = 0.0
        """Seconds spent waiting for the tuple-service (leases and reads)."""
        self.prefetch_seconds = 0.0
        """Seconds :meth:`prefetch` took."""
        self._current: dict[str, _Lease] = {}
        self._numbers: dict[str, int] = {}
        self._plan: dict[str, Any] | None = None
        self._plan_reader: _Prefetched | None = None
        self._shuffles: list[tuple[int, str]] | None = None

    def _plan_view(self) -> dict[str, Any]:
        if self._plan is None:
            self._plan = self._reservation(plan_id(self.job_id, self.worker), {})
        return self._plan

    def prefetch(
        self, shuffles: list[tuple[int, str]] | None, limit: int, block: int = 1 << 22
    ) -> None:
        """Epoch 0: read the plan reservation into memory before the online phase.

        Every kind whose tuples fit in ``limit`` bytes (in name order), then the
        predicted ``shuffles`` (``(rows, kinds)`` in request order) while the budget
        lasts.  The online phase then only hands out what is in memory, as the bare
        engine does.  A shuffle request that differs from the prediction moves the
        shuffles to extension leases (at every party: the prediction is the same
        everywhere); the prefetched correlations are then wasted, never reused.
        """
        if self.epoch != 0 or limit <= 0:
            return
        started = time.perf_counter()
        plan = self._plan_view()
        reader = _Prefetched(_LeaseReader(self.client, plan["reservation_id"]))
        for kind, info in sorted(plan["kinds"].items()):
            size = int(info["count"]) * (0 if kind == SHUFFLE else parse_kind(kind).tuple_bytes)
            if kind != SHUFFLE and reader.bytes + size <= limit:
                reader.load(kind, int(info["count"]), block)
        planned = int(plan["kinds"].get(SHUFFLE, {}).get("count", 0))
        if shuffles is not None and planned >= len(shuffles):
            self._shuffles = list(shuffles)
            for index, (rows, kinds) in enumerate(shuffles):
                if reader.bytes >= limit:
                    break
                reader.shuffles[index] = self.client.shuffle(
                    plan["reservation_id"], index, rows, kinds
                )
                reader.bytes += len(reader.shuffles[index])
        self._plan_reader = reader
        self.prefetch_seconds += time.perf_counter() - started

    def _reservation(self, reservation_id: str, wants: Mapping[str, int]) -> dict[str, Any]:
        if self.leads:
            return self.client.reserve(reservation_id, self.job_id, wants, self.policy.wait_s)
        return self.client.wait(
            reservation_id,
            self.policy.wait_s,
            f"party 0's tuple lease {reservation_id}",
            self.interrupted,
        )

    def _lease(self, reservation_id: str, kind: str, view: Mapping[str, Any]) -> _Lease:
        count = int(view["kinds"][kind]["count"])
        reader: TupleReader = _LeaseReader(self.client, reservation_id)
        if (
            self._plan_reader is not None
            and reservation_id == self._plan_reader.inner.reservation_id
        ):
            reader = self._plan_reader
        return _Lease(reservation_id, kind, count, ReservedSource(self.party, self.parties, reader))

    def _next_lease(self, kind: str, request: int) -> _Lease:
        if self.epoch == 0 and kind not in self._numbers:
            plan = self._plan_view()
            planned = plan["kinds"].get(kind)
            self._numbers[kind] = 0
            if planned is not None and int(planned["count"]) >= request:
                return self._lease(plan["reservation_id"], kind, plan)
        number = self._numbers.get(kind, 0)
        self._numbers[kind] = number + 1
        reservation_id = lease_id(self.job_id, self.worker, self.epoch, kind, number)
        view = self._reservation(reservation_id, {kind: self.policy.size(number, request)})
        return self._lease(reservation_id, kind, view)

    def _take(
        self,
        kind: str,
        count: int,
        read: Callable[[ReservedSource], Result],
        **details: int | str,
    ) -> Result:
        started = time.perf_counter()
        try:
            lease = self._current.get(kind)
            if lease is None or lease.count - lease.used < count:
                lease = self._current[kind] = self._next_lease(kind, count)
            entry = {"epoch": self.epoch, "lease": lease.id, "kind": kind}
            self.ledger.append({**entry, "offset": lease.used, "count": count, **details})
            return read(lease.source)
        finally:
            self.generation_seconds += time.perf_counter() - started

    def _arrays(self, kind: str, count: int) -> tuple[Shares, ...]:
        def read(source: ReservedSource) -> tuple[Shares, ...]:
            offset = source.cursors.get(kind, 0)
            reader = source.reader
            arrays = reader.take(kind, offset, count) if isinstance(reader, _Prefetched) else None
            if arrays is None:
                return _read(source, kind, count)
            source.cursors[kind] = offset + count
            return arrays

        return self._take(kind, count, read)

    def triples(self, count: int) -> tuple[Shares, Shares, Shares]:
        a, b, c = self._arrays("triples", count)
        return a, b, c

    def bit_triples(self, words: int) -> tuple[Shares, Shares, Shares]:
        a, b, c = self._arrays("bit_triples", words)
        return a, b, c

    def dabits(self, count: int) -> tuple[Shares, Shares]:
        arith, binary = self._arrays("dabits", count)
        return arith, binary

    def edabits(self, count: int, width: int) -> tuple[Shares, Shares]:
        if not 1 <= width <= 64:
            raise ValueError("edaBit width must be 1..64")
        arith, planes = self._arrays(f"edabits:{width}", count)
        return arith, planes

    def shuffle(self, rows: int, kinds: str) -> ShuffleShare:
        if self._shuffles is not None:  # the plan's shuffles serve while they are as predicted
            lease = self._current.get(SHUFFLE)  # None or the plan's
            index = lease.used if lease is not None else 0
            if index >= len(self._shuffles) or self._shuffles[index] != (rows, kinds):
                log.info("shuffle %d is not as planned: extension leases from here", index)
                self._shuffles = None
                self._numbers.setdefault(SHUFFLE, 0)  # skip the plan from here on
                if lease is not None:
                    lease.count = lease.used
        return self._take(
            SHUFFLE, 1, lambda source: source.shuffle(rows, kinds), rows=rows, kinds=kinds
        )

    def input_masks(self, count: int) -> Shares:
        (masks,) = self._arrays("input_masks", count)
        return masks

    def position(self) -> dict[str, int]:
        """The epoch (the checkpoint records it; a resume opens a later one anyway)."""
        return {"epoch": self.epoch}

    def close(self) -> None:
        """Close the ledger."""
        self.ledger.close()


class TupleServiceProvider(LedgerAccess):
    """``TupleProvider`` over this party's tuple-service (party 0 leads; module docstring)."""

    def __init__(
        self,
        base_url: str,
        root: Path,
        party: int,
        parties: int,
        token: str = "",
        policy: LeasePolicy | None = None,
        timeout: float = 300.0,
        ca: Path | None = None,
    ) -> None:
        self.client = TupleServiceClient(base_url, token, timeout, ca)
        self.root = Path(root)
        self.party = party
        self.parties = parties
        self.policy = policy or LeasePolicy()
        self.leads = party == 0

    def reserve(self, job_id: str, workers: int, needs: Mapping[str, int]) -> None:
        """Check the tuple-service; party 0 reserves each worker's estimated needs."""
        self.client.ready()
        if not self.leads:
            return
        wants = {kind: count for kind, count in needs.items() if count > 0}
        for worker in range(workers):
            self.client.reserve(plan_id(job_id, worker), job_id, wants, self.policy.wait_s)

    def issue_job_token(self, job_id: str, ttl_s: float) -> str:
        """The credential of the job's workers at this party's tuple-service."""
        return self.client.issue_job_token(job_id, ttl_s)

    def revoke_job_tokens(self, job_id: str) -> None:
        """Revoke the job's worker credentials at this party's tuple-service."""
        self.client.revoke_job_tokens(job_id)

    def release(self, job_id: str) -> None:
        """Party 0: release every reservation of the job at every party."""
        if not self.leads:
            return
        for reservation_id in self.client.job_reservations(job_id, "active"):
            try:
                self.client.release(reservation_id)
            except TupleServiceError as error:  # the tuple-service retries releasing ones
                log.warning("releasing reservation %s of job %s: %s", reservation_id, job_id, error)

    def open(
        self,
        job_id: str,
        worker: int,
        start: Mapping[str, int],
        interrupted: Callable[[], BaseException | None] | None = None,
    ) -> TupleSource:
        ledger, epoch = self._open_ledger(job_id, worker, start)
        return LeasedSource(
            self.party,
            self.parties,
            self.client,
            ledger,
            job_id,
            worker,
            epoch,
            self.policy,
            interrupted,
        )
