"""One party's tuple-service core: generation sessions, pools, reservations, release.

The leader (party 0) drives everything that must be the same at every
party: it opens generation sessions, allocates global chunk ids, asks the
followers to generate the chunks it generates itself, and pushes
reservations.  A chunk becomes reservable at the leader only after every
follower has stored it; a reservation becomes active only after every
follower accepted it.  After a restart the leader discards chunks whose
generation was interrupted and releases reservations that never became
active, at every party, so nothing is handed out twice or lost for good.

With ``generator=dealer`` the leader allocates the chunk ids the same way
and asks the dealer process to deal them; the dealer pushes every party its
own shares (:meth:`TupleNode.store_dealt`), and shuffle correlations are
fetched from the dealer when the engine asks for them.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import TypeVar

import grpc

from tally._generated import tuples_pb2, tuples_pb2_grpc
from tally.common.prf import AesCtrPrf
from tally.mpc.offline import Hm3Generator, PairKeys, ShakePrf, agree_keys
from tally.mpc.offline.layout import parse_kind
from tally.mpc.offline.ot import OtGenerator, keep_freed_buffers
from tally.mpc.offline.prf import Prf
from tally.mpc.offline.wire import WireParts, encode_shuffle_parts
from tally.mpc.transport import TransportError
from tally.tuples.generation import chunk_label, hm3_chunk
from tally.tuples.link import GrpcTransport, Mailboxes
from tally.tuples.ot_group import Ed25519Group
from tally.tuples.ot_hash import AesBlockHash
from tally.tuples.settings import TuplesSettings
from tally.tuples.store import SHUFFLE, ChunkStore, ReservationError, ReservationSpec

log = logging.getLogger(__name__)
Result = TypeVar("Result")


@dataclass
class Session:
    """Pairwise keys agreed for one generation session, and its transport."""

    id: str
    keys: PairKeys | None
    generator: Hm3Generator | OtGenerator
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class Rates:
    """Tuples generated and served per kind since start (for /metrics)."""

    generated: dict[str, int] = field(default_factory=dict)
    served: dict[str, int] = field(default_factory=dict)
    generation_seconds: dict[str, float] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    def add(self, table: dict[str, int], kind: str, count: int) -> None:
        table[kind] = table.get(kind, 0) + count


class TupleNode:
    """Everything one party's tuple-service does, independent of gRPC and HTTP plumbing."""

    def __init__(
        self,
        settings: TuplesSettings,
        store: ChunkStore,
        stubs: dict[int, tuples_pb2_grpc.TupleLinkStub],
        dealer: tuples_pb2_grpc.TupleDealerStub | None = None,
    ) -> None:
        self.settings = settings
        self.party = settings.party
        self.store = store
        self.stubs = stubs
        self.dealer = dealer
        """The dealer process's stub (``generator=dealer``), else None."""
        if settings.generator == "ot":
            keep_freed_buffers()  # process-wide, once: every ot batch reuses the heap
        self.mailboxes = Mailboxes()
        self.sessions: dict[str, Session] = {}
        self.current: Session | None = None
        self.rates = Rates()
        self.prf: Prf = AesCtrPrf() if settings.prf == "aes" else ShakePrf()
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="tuples-peer")
        self._leader_lock = threading.Lock()
        self._reserve_lock = threading.Lock()
        self._once_lock = threading.Lock()
        self._stop = threading.Event()
        self.ready = threading.Event()
        self.link_server: grpc.Server | None = None

    # -- sessions and generation (all parties) ----------------------------------------------

    def open_session(self, session_id: str) -> Session:
        """Agree on fresh pairwise keys for ``session_id`` (runs at every party at once)."""
        self._require_joint_generator()
        transport = GrpcTransport(
            self.party, self.stubs, self.mailboxes, session_id, self.settings.rpc_timeout_s
        )
        if self.settings.generator == "ot":
            generator = OtGenerator(
                transport, AesCtrPrf(), AesBlockHash(), session_id.encode(), group=Ed25519Group()
            )
            session = Session(session_id, None, generator)
        else:
            keys = agree_keys(transport, self.prf)
            session = Session(session_id, keys, Hm3Generator(keys, transport))
        self.sessions[session_id] = session
        self.current = session
        return session

    def generate(self, session_id: str, kind: str, chunk_ids: list[int], size: int) -> float:
        """Generate and store ``chunk_ids`` of ``kind`` in this session; returns seconds taken."""
        self._require_joint_generator()
        session = self.sessions.get(session_id)
        if session is None:
            raise ReservationError(f"no generation session {session_id} here (restarted?)")
        parsed = parse_kind(kind)
        started = time.perf_counter()
        state = "generating" if self.settings.is_leader else "free"
        with session.lock:
            for chunk_id in chunk_ids:
                sections = hm3_chunk(
                    session.generator, parsed, chunk_label(session_id, chunk_id), size
                )
                self.store.store_chunk(chunk_id, kind, size, sections, state)
        seconds = time.perf_counter() - started
        self.rates.add(self.rates.generated, kind, size * len(chunk_ids))
        self.rates.generation_seconds[kind] = self.rates.generation_seconds.get(kind, 0.0) + seconds
        return seconds

    def _require_joint_generator(self) -> None:
        if self.settings.generator not in ("hm3", "ot"):
            raise ReservationError(
                f"this party generates with {self.settings.generator}, not hm3 or ot; check that "
                "every party has the same TALLY_TUPLES_GENERATOR"
            )

    def store_dealt(self, kind: str, chunk_id: int, count: int, data: bytes) -> None:
        """Store this party's shares of one chunk pushed by the dealer (dealer mode only)."""
        if self.settings.generator != "dealer":
            raise ReservationError("this party generates with hm3; it accepts no dealt chunks")
        parsed = parse_kind(kind)
        if count <= 0 or len(data) != count * parsed.tuple_bytes:
            raise ReservationError(
                f"a {kind} chunk of {count} tuples is {count * parsed.tuple_bytes} bytes, "
                f"not {len(data)}"
            )
        started = time.perf_counter()
        state = "generating" if self.settings.is_leader else "free"
        self.store.store_chunk(chunk_id, kind, count, [data], state)
        self.rates.add(self.rates.generated, kind, count)
        seconds = time.perf_counter() - started
        self.rates.generation_seconds[kind] = self.rates.generation_seconds.get(kind, 0.0) + seconds

    def shuffle(
        self, reservation_id: str, session_id: str, index: int, rows: int, kinds: str
    ) -> tuple[WireParts, int]:
        """This party's shuffle correlation ``index`` of an active reservation, handed out once.

        hm3 derives it under the reservation's session keys (no traffic); in dealer
        mode the dealer derives it and sends this party its share only.  Returns
        the encoding as pieces in wire order (views of the derived arrays, no
        copy) and its length in bytes.
        """
        if self.settings.generator == "dealer":
            if self.dealer is None:
                raise ReservationError("dealer mode without a dealer connection")
            self.store.take_shuffle(reservation_id, index)
            request = tuples_pb2.ShuffleRequest(
                party=self.party,
                reservation_id=reservation_id,
                index=index,
                rows=rows,
                kinds=kinds,
                nonce=session_id,
            )
            try:
                reply = self.dealer.Shuffle(request, timeout=self.settings.rpc_timeout_s)
            except grpc.RpcError as error:
                raise ReservationError(f"the dealer is unreachable: {error.details()}") from error
            if not reply.ok:
                raise ReservationError(f"the dealer refused the shuffle: {reply.detail}")
            correlation = bytes(reply.correlation)
            return [correlation], len(correlation)
        if self.settings.generator == "ot":
            return self._ot_shuffle(reservation_id, session_id, index, rows, kinds)
        session = self.sessions.get(session_id)
        if session is None:
            raise ReservationError("the reservation's key session is gone (restarted?)")
        self.store.take_shuffle(reservation_id, index)
        label = f"{session_id}/reservation/{reservation_id}/shuffle/{index}".encode()
        return encode_shuffle_parts(session.generator.shuffle(label, rows, kinds))

    def _ot_shuffle(
        self, reservation_id: str, session_id: str, index: int, rows: int, kinds: str
    ) -> tuple[WireParts, int]:
        """ot: generated with every party when each party's worker asks for its share.

        Each correlation runs on a TupleLink channel of its own (named by the
        reservation and index, so it never mixes with pool generation or another
        shuffle) with fresh base OTs (edwards25519: about 0.05 s per pair), so no OT
        state is shared between correlations.  The index is taken before generating:
        a failed run leaves it consumed, never served twice.
        """
        self.store.take_shuffle(reservation_id, index)
        channel = f"{session_id}/reservation/{reservation_id}/shuffle/{index}"
        transport = GrpcTransport(
            self.party, self.stubs, self.mailboxes, channel, self.settings.rpc_timeout_s
        )
        try:
            generator = OtGenerator(
                transport, AesCtrPrf(), AesBlockHash(), channel.encode(), group=Ed25519Group()
            )
            correlation = generator.shuffle(channel.encode(), rows, kinds)
        except TransportError as error:
            raise ReservationError(f"the ot shuffle {index} failed: {error}") from error
        finally:
            self.mailboxes.discard(channel)
        return encode_shuffle_parts(correlation)

    # -- leader --------------------------------------------------------------------------

    def _on_followers(
        self, call: Callable[[int, tuples_pb2_grpc.TupleLinkStub], Result]
    ) -> list[Result]:
        futures = [self._pool.submit(call, peer, stub) for peer, stub in self.stubs.items()]
        return [future.result() for future in futures]

    def _require_leader(self) -> None:
        if not self.settings.is_leader:
            raise ReservationError(
                "only the leader (party 0) opens sessions, generates or reserves"
            )

    def lead_session(self) -> Session:
        """Leader: open a new session at every party.

        A follower that cannot open it (down, or still starting) closes the
        session at every party at once: the others' key agreement may be waiting
        for that follower's message, and would otherwise wait out the round timeout.
        """
        self._require_leader()
        session_id = uuid.uuid4().hex
        request = tuples_pb2.SessionRequest(session=session_id)

        def open_at(stub: tuples_pb2_grpc.TupleLinkStub) -> str:
            try:
                reply = stub.OpenSession(request, timeout=self.settings.rpc_timeout_s)
                failure = "" if reply.ok else str(reply.detail)
            except grpc.RpcError as error:
                failure = f"unreachable: {error.details()}"
            if failure:
                self._close_everywhere(session_id)
            return failure

        futures = [self._pool.submit(open_at, stub) for stub in self.stubs.values()]
        session, failures = None, []
        try:
            session = self.open_session(session_id)
        except TransportError as error:
            failures.append(str(error))
        failures = [f for f in (future.result() for future in futures) if f] + failures
        if session is None or failures:
            self._close_everywhere(session_id)
            raise ReservationError(f"a follower could not open the session: {failures[0]}")
        return session

    def lead_generation(self, kind: str, tuples: int) -> list[int]:
        """Leader: generate at least ``tuples`` of ``kind`` at every party; returns chunk ids.

        A failure discards the chunks everywhere and drops the session; one
        retry in a fresh session covers a follower that restarted (and lost
        its keys) since the session was opened.
        """
        try:
            return self._generate_round(kind, tuples)
        except (ReservationError, grpc.RpcError) as error:
            log.info("generation failed (%s); retrying in a new session", error)
            return self._generate_round(kind, tuples)

    def _generate_round(self, kind: str, tuples: int) -> list[int]:
        self._require_leader()
        parse_kind(kind)
        size = self.settings.chunk_size
        chunk_count = max(1, -(-tuples // size))
        if self.settings.generator == "dealer":
            return self._deal_round(kind, chunk_count, size)
        with self._leader_lock:
            session = self.current or self.lead_session()
            ids = self.store.allocate(kind, chunk_count, size)
            request = tuples_pb2.GenerateRequest(
                session=session.id, kind=kind, chunk_ids=ids, chunk_size=size
            )
            timeout = self.settings.rpc_timeout_s + 10.0 * chunk_count
            futures = [
                self._pool.submit(stub.Generate, request, timeout=timeout)
                for stub in self.stubs.values()
            ]
            own = self._pool.submit(self.generate, session.id, kind, ids, size)
            failures: list[str] = []
            closed = False
            for future in as_completed([own, *futures]):
                try:
                    reply = future.result()
                    if isinstance(reply, tuples_pb2.GenerateReply) and not reply.ok:
                        failures.append(reply.detail)
                except Exception as error:
                    failures.append(str(error))
                if failures and not closed:
                    self._close_everywhere(session.id)  # nobody waits for a failed party
                    closed = True
            if failures:
                self._discard_everywhere(ids)
                raise ReservationError(f"generation failed: {failures}")
            self.store.mark_free(ids)
        return ids

    def _deal_round(self, kind: str, chunk_count: int, size: int) -> list[int]:
        """Leader, dealer mode: allocate ids, have the dealer push them everywhere, mark free."""
        if self.dealer is None:
            raise ReservationError("dealer mode without a dealer connection")
        with self._leader_lock:
            ids = self.store.allocate(kind, chunk_count, size)
            request = tuples_pb2.DealRequest(kind=kind, chunk_ids=ids, chunk_size=size)
            try:
                reply = self.dealer.Deal(
                    request, timeout=self.settings.rpc_timeout_s + 10.0 * chunk_count
                )
                failure = "" if reply.ok else reply.detail
            except grpc.RpcError as error:
                failure = f"the dealer is unreachable: {error.details()}"
            if failure:
                self._discard_everywhere(ids)
                raise ReservationError(f"dealing failed: {failure}")
            self.store.mark_free(ids)
        return ids

    def close_session(self, session_id: str) -> None:
        """Abandon a session here: its waiting rounds fail, its keys are forgotten."""
        self.mailboxes.close(session_id, len(self.stubs) + 1)
        self.sessions.pop(session_id, None)
        if self.current is not None and self.current.id == session_id:
            self.current = None

    def _close_everywhere(self, session_id: str) -> None:
        self.close_session(session_id)
        request = tuples_pb2.SessionRequest(session=session_id)
        for stub in self.stubs.values():
            with contextlib.suppress(grpc.RpcError):
                stub.CloseSession(request, timeout=5.0)

    def _discard_everywhere(self, ids: list[int]) -> None:
        request = tuples_pb2.DiscardRequest(chunk_ids=ids)
        for stub in self.stubs.values():
            try:
                stub.Discard(request, timeout=self.settings.rpc_timeout_s)
            except grpc.RpcError as error:
                log.warning("could not discard chunks at a follower: %s", error.details())
        self.store.discard(ids)

    def reserve_once(self, reservation_id: str, job_id: str, wants: dict[str, int]) -> bool:
        """Leader: :meth:`reserve` under a client-chosen id, unless it exists; True if made now."""
        with self._once_lock:
            if self.store.reservation(reservation_id) is not None:
                return False
            self.reserve(job_id, wants, reservation_id)
            return True

    def reserve(
        self, job_id: str, wants: dict[str, int], reservation_id: str | None = None
    ) -> tuple[str, ReservationSpec]:
        """Leader: reserve ``wants`` (tuples per kind) for a job at every party."""
        self._require_leader()
        reservation_id = reservation_id or uuid.uuid4().hex
        dealt = self.settings.generator == "dealer"
        if wants.get(SHUFFLE, 0) > 0 and self.current is None and not dealt:
            with self._leader_lock:  # shuffles are derived under a live session's keys
                if self.current is None:
                    self.lead_session()
        # dealer mode: a random nonce stored with the reservation, which the dealer's shuffle
        # correlations are derived under (a reused reservation id never repeats a permutation)
        session = f"dealer-{uuid.uuid4().hex}" if dealt else self.current.id if self.current else ""
        with self._reserve_lock:  # the leader is the only allocator: one pick at a time
            spec = self.store.reserve_free(reservation_id, job_id, session, wants)
        request = tuples_pb2.ReserveRequest(
            reservation_id=reservation_id,
            job_id=job_id,
            session=session,
            kinds=[
                tuples_pb2.KindReservation(
                    kind=kind,
                    count=count,
                    ranges=[tuples_pb2.TupleChunkRange(first=a, last=b) for a, b in ranges(ids)],
                )
                for kind, (count, ids) in spec.kinds.items()
            ],
        )

        def push(peer: int, stub: tuples_pb2_grpc.TupleLinkStub) -> str:
            try:
                reply = stub.Reserve(request, timeout=self.settings.rpc_timeout_s)
            except grpc.RpcError as error:
                return f"party {peer} unreachable: {error.details()}"
            return "" if reply.accepted else f"party {peer}: {reply.detail}"

        refusals = [r for r in self._on_followers(push) if r]
        if refusals:
            self.release(reservation_id)
            raise ReservationError("reservation refused: " + "; ".join(refusals))
        self.store.set_state(reservation_id, "active")
        return reservation_id, spec

    def release(self, reservation_id: str) -> bool:
        """Leader: release a reservation at every party (two phases); True once all applied it."""
        self._require_leader()
        prepare = tuples_pb2.ReleaseRequest(
            reservation_id=reservation_id, phase=tuples_pb2.ReleaseRequest.PREPARE
        )
        consumed = set(self.store.prepare_release(reservation_id))
        try:
            for reply in self._on_followers(
                lambda _, stub: stub.Release(prepare, timeout=self.settings.rpc_timeout_s)
            ):
                consumed.update(reply.consumed)
            apply = tuples_pb2.ReleaseRequest(
                reservation_id=reservation_id,
                phase=tuples_pb2.ReleaseRequest.APPLY,
                consumed=sorted(consumed),
            )
            self._on_followers(
                lambda _, stub: stub.Release(apply, timeout=self.settings.rpc_timeout_s)
            )
        except grpc.RpcError as error:
            log.warning("release of %s postponed: %s", reservation_id, error.details())
            return False
        self.store.apply_release(reservation_id, consumed)
        return True

    def recover(self) -> None:
        """Leader after a (re)start: discard unfinished chunks, release unsettled reservations."""
        self._require_leader()
        unfinished = self.store.generating()
        if unfinished:
            self._discard_everywhere(unfinished)
        for reservation_id in self.store.reservations_in(["pending", "releasing"]):
            self.release(reservation_id)

    def replenish_once(self) -> list[tuple[str, int]]:
        """Leader: top up every pool below its low-water mark; returns (kind, tuples) made."""
        made = []
        for pool in self.settings.pools:
            free = self.store.free_tuples(pool.kind)
            if free < pool.low_water:
                self.lead_generation(pool.kind, pool.batch)
                made.append((pool.kind, pool.batch))
        return made

    def run_background(self) -> None:
        """Leader: recover, then keep pools filled until ``stop``."""
        while not self._stop.is_set():
            try:
                self.recover()
                break
            except Exception as error:  # peers may not be up yet
                log.info("recovery waits for the followers: %s", error)
                self._stop.wait(self.settings.replenish_interval_s)
        self.ready.set()
        while not self._stop.is_set():
            try:
                for reservation_id in self.store.reservations_in(["releasing"]):
                    self.release(reservation_id)
                if self.settings.replenish:
                    self.replenish_once()
            except Exception as error:
                log.warning("background round failed, will retry: %s", error)
            self._stop.wait(self.settings.replenish_interval_s)

    def stop(self) -> None:
        self._stop.set()
        self._pool.shutdown(wait=False, cancel_futures=True)


def ranges(ids: list[int]) -> list[tuple[int, int]]:
    """Sorted chunk ids as inclusive (first, last) runs."""
    out: list[tuple[int, int]] = []
    for chunk_id in ids:
        if out and out[-1][1] + 1 == chunk_id:
            out[-1] = (out[-1][0], chunk_id)
        else:
            out.append((chunk_id, chunk_id))
    return out


def expand(runs: list[tuple[int, int]]) -> list[int]:
    return [i for first, last in runs for i in range(first, last + 1)]
