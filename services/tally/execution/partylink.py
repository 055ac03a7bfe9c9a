"""PartyLink: the engine's ``Transport`` over gRPC bidirectional streams between parties.

One job worker (one partition of one job) at each party owns a
:class:`PartyLinkEndpoint`: a gRPC server for the peers with higher ids, channels
to the peers with lower ids (the higher id dials, as in ``SocketTransport``), and
one bidirectional ``Exchange`` stream per pair of parties.  A *mesh* is one
generation of those streams; :meth:`PartyLinkEndpoint.connect` builds it and
returns a :class:`PartyLinkTransport` for the engine plus every peer's ``Hello``
(its resume state, see :mod:`tally.execution.recovery`).  When any link breaks
(a peer died, restarted or gave up) every ``exchange`` in progress raises
:class:`PeerLost`, and the worker builds the next mesh.

Wire format of one engine round to one peer: a ``DATA`` frame carrying the array
headers (dtype, shape) and the first bytes, then ``CHUNK`` frames of at most
:data:`CHUNK_BYTES`; the last frame is flagged.  Every frame names the job, the
worker, the sender and the round.  A stream whose first frame is for another job
or worker, or whose sender is not the party its TLS certificate names, is refused
(``NOT_FOUND`` / ``PERMISSION_DENIED``); a frame that is out of order (a round
that does not increase, a chunk without a round, a sender that changed) breaks
the link with a :class:`ProtocolViolation`, which fails the job.

Threading: the engine calls ``exchange`` synchronously from the worker's main
thread.  The gRPC side runs on a ``grpc.aio`` event loop in one background thread
of the worker process.  All streams to all peers share that loop, so sends and
receives to every peer overlap without a thread per stream. The engine thread
only hands over arrays (``run_coroutine_threadsafe``) and blocks on a
thread-safe queue per peer.  With synchronous gRPC, a bidirectional stream needs
a request-iterator thread and a response-reading thread per peer, so there are
more threads competing for the GIL.  The measured cost against
``SocketTransport`` is in ``docs/execution.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import queue
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, NamedTuple

import grpc
import numpy as np
from google.protobuf.message import DecodeError
from numpy.typing import NDArray

from tally._generated import partylink_pb2 as pb
from tally._generated import partylink_pb2_grpc as pb_grpc
from tally.execution.tls import PartyTLS, party_name, peer_party
from tally.mpc.transport import Message, Transport, TransportError

log = logging.getLogger(__name__)

CHUNK_BYTES = 16 << 20
"""Largest array payload in one frame (an array up to this size is received without a copy)."""
MAX_FRAME = CHUNK_BYTES + (1 << 20)
MAX_MESSAGE_BYTES = 16 << 30
"""Largest round message accepted from a peer (guards the receive allocation)."""

CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MAX_FRAME),
    ("grpc.max_receive_message_length", MAX_FRAME),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]
SERVER_OPTIONS = [
    ("grpc.max_send_message_length", MAX_FRAME),
    ("grpc.max_receive_message_length", MAX_FRAME),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    # A mesh may stay silent for long (a party reading its tuples, a long local step):
    # peers' keepalive pings must never earn a "too many pings" GOAWAY that drops it.
    ("grpc.http2.max_ping_strikes", 0),
    ("grpc.so_reuseport", 0),
]


class PeerLost(TransportError):
    """A link to a peer broke (the peer died, restarted or left): rebuild the mesh."""


class ProtocolViolation(TransportError):
    """A peer sent something out of protocol (wrong round, job, sender): fail the job."""


@dataclass(frozen=True)
class LinkIdentity:
    """Which worker this is: job, worker (partition), this party, how many parties."""

    job_id: str
    worker: int
    party: int
    parties: int

    def frame(self, kind: pb.Frame.Kind, **fields: Any) -> pb.Frame:
        """A frame from this worker: its job, worker and sender filled in."""
        return pb.Frame(
            kind=kind, job_id=self.job_id, worker=self.worker, sender=self.party, **fields
        )


def secure_channel(address: str, tls: PartyTLS | None, peer: int) -> grpc.aio.Channel:
    """An aio channel to ``peer``; with TLS the server must present ``party-<peer>``."""
    if tls is None:
        return grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
    options = [*CHANNEL_OPTIONS, ("grpc.ssl_target_name_override", party_name(peer))]
    return grpc.aio.secure_channel(address, tls.channel_credentials(), options=options)


class _Link:
    """One open stream to one peer: how to read and write frames and how to close it."""

    def __init__(
        self,
        peer: int,
        read: Callable[[], Awaitable[Any]],
        write: Callable[[pb.Frame | bytes], Awaitable[None]],
        close: Callable[[], None],
        done_writing: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.peer = peer
        self.read = read
        self.write = write
        self._close = close
        self.done_writing = done_writing
        """Set on the dialling side: half-close, then wait for the acceptor to end the call."""
        self.closed = asyncio.Event()
        self.ended = asyncio.Event()
        """Set when the peer ended the stream (end of stream or an error)."""

    def close(self) -> None:
        if not self.closed.is_set():
            self.closed.set()
            with contextlib.suppress(Exception):
                self._close()


class _Broken:
    """Queued to wake up an ``exchange`` that waits on a mesh that broke."""

    def __init__(self, error: TransportError) -> None:
        self.error = error


_DATA_KEY = (8 << 3) | 2
"""``Frame.data`` on the wire: field 8, length-delimited."""
_DATA_TAG = bytes([_DATA_KEY])


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


class _Incoming(NamedTuple):
    """A received frame: its fields without ``data``, and ``data`` as a view of the message."""

    frame: pb.Frame
    data: memoryview


def _read_varint(raw: bytes, position: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if position >= len(raw) or shift > 63:
            raise ProtocolViolation("a peer sent a malformed frame")
        byte = raw[position]
        value |= (byte & 0x7F) << shift
        position, shift = position + 1, shift + 7
        if not byte & 0x80:
            return value, position


def _parse(raw: bytes) -> _Incoming:
    """gRPC deserializer for frames: the ``data`` field is not copied out of the message.

    Walks the top-level fields (protobuf wire format: tag, then a varint, fixed-width
    or length-delimited value); every field but ``data`` (the last one wins, as in
    protobuf) is parsed as a ``Frame``, and ``data`` is returned as a view.
    """
    view = memoryview(raw)
    kept: list[memoryview] = []
    data = view[0:0]
    position = 0
    while position < len(raw):
        start = position
        key, position = _read_varint(raw, position)
        wire = key & 7
        value_start = position
        if wire == 0:
            _, position = _read_varint(raw, position)
        elif wire == 1:
            position += 8
        elif wire == 2:
            length, value_start = _read_varint(raw, position)
            position = value_start + length
        elif wire == 5:
            position += 4
        else:
            raise ProtocolViolation("a peer sent a malformed frame")
        if position > len(raw):
            raise ProtocolViolation("a peer sent a truncated frame")
        if key == _DATA_KEY:
            data = view[value_start:position]
        else:
            kept.append(view[start:position])
    try:
        frame = pb.Frame.FromString(b"".join(kept))
    except DecodeError as error:
        raise ProtocolViolation(f"a peer sent a malformed frame: {error}") from None
    return _Incoming(frame, data)


def _serialize(frame: pb.Frame | bytes) -> bytes:
    """gRPC serializer for frames: :func:`_frames` hands over frames already encoded."""
    return frame if isinstance(frame, bytes) else frame.SerializeToString()


def _frames(identity: LinkIdentity, round_number: int, arrays: Message) -> Iterator[bytes]:
    """One round's message to one peer as encoded frames (headers first, then chunked bytes).

    Each frame is the encoded ``Frame`` without its ``data`` followed by the ``data``
    field written by hand (a protobuf message is the concatenation of its fields), so a
    chunk is copied once, straight from the array into the frame, instead of into a
    ``bytes``, into the message and again into its encoding.
    """
    headers = []
    views = []
    for array in arrays:
        contiguous = np.ascontiguousarray(array)
        if contiguous.dtype.hasobject:
            raise TransportError(f"cannot send arrays of dtype {contiguous.dtype}")
        headers.append(pb.ArrayHeader(dtype=contiguous.dtype.str, shape=list(contiguous.shape)))
        if contiguous.nbytes:
            views.append(contiguous.data.cast("B"))

    chunks = [
        view[start : start + CHUNK_BYTES]
        for view in views
        for start in range(0, len(view), CHUNK_BYTES)
    ]
    if not chunks:
        only = identity.frame(pb.Frame.DATA, round=round_number, arrays=headers, last=True)
        yield only.SerializeToString()
        return
    for index, chunk in enumerate(chunks):
        last = index == len(chunks) - 1
        if index == 0:
            head = identity.frame(pb.Frame.DATA, round=round_number, arrays=headers, last=last)
        else:
            head = identity.frame(pb.Frame.CHUNK, round=round_number, last=last)
        yield b"".join((head.SerializeToString(), _DATA_TAG, _varint(len(chunk)), chunk))


class _Assembly:
    """The arrays of one incoming round message, filled chunk by chunk.

    An array that arrives whole in one frame is used where it is: a read-only view of
    the received message, not a copy (the engine never writes into what it received).
    An array split over several frames is copied into memory of its own, by numpy,
    which lets go of the GIL while it copies.
    """

    def __init__(self, frame: pb.Frame) -> None:
        self.round = frame.round
        self.arrays: list[NDArray[np.generic]] = []
        self._pending: list[tuple[int, np.dtype[Any], tuple[int, ...], int]] = []
        total = 0
        for header in frame.arrays:
            dtype = np.dtype(header.dtype)
            if dtype.hasobject:
                raise ProtocolViolation(f"refusing arrays of dtype {dtype}")
            shape = tuple(int(s) for s in header.shape)
            if any(s < 0 for s in shape):
                raise ProtocolViolation("a peer sent a negative array dimension")
            nbytes = math.prod(shape) * dtype.itemsize
            total += nbytes
            if total > MAX_MESSAGE_BYTES:
                raise ProtocolViolation("a round message exceeds the size limit")
            if nbytes:
                self._pending.append((len(self.arrays), dtype, shape, nbytes))
            self.arrays.append(np.empty(shape, dtype=dtype) if not nbytes else _NOTHING)
        self._pending.reverse()
        self._filling: NDArray[np.uint8] | None = None
        self._position = 0

    def add(self, data: bytes | memoryview) -> None:
        offset = 0
        while offset < len(data):
            if self._filling is None:
                if not self._pending:
                    raise ProtocolViolation("a peer sent more bytes than its array headers declare")
                index, dtype, shape, nbytes = self._pending[-1]
                if offset == 0 and len(data) >= nbytes:
                    whole = np.frombuffer(data, dtype=dtype, count=nbytes // dtype.itemsize)
                    self.arrays[index] = whole.reshape(shape)
                    self._pending.pop()
                    offset = nbytes
                    continue
                self.arrays[index] = np.empty(shape, dtype=dtype)
                self._filling = self.arrays[index].reshape(-1).view(np.uint8)
                self._position = 0
            take = min(len(self._filling) - self._position, len(data) - offset)
            piece = np.frombuffer(data, dtype=np.uint8, count=take, offset=offset)
            self._filling[self._position : self._position + take] = piece
            self._position += take
            offset += take
            if self._position == len(self._filling):
                self._filling = None
                self._pending.pop()

    def complete(self) -> bool:
        return not self._pending


_NOTHING: NDArray[np.generic] = np.empty(0, dtype=np.uint8)
"""Placeholder for an array whose bytes have not arrived yet."""


class PartyLinkTransport(Transport):
    """One mesh generation: the engine's ``Transport`` over this worker's links."""

    def __init__(
        self, endpoint: PartyLinkEndpoint, links: Mapping[int, _Link], io_timeout: float
    ) -> None:
        identity = endpoint.identity
        super().__init__(identity.party, identity.parties)
        self._endpoint = endpoint
        self._identity = identity
        self._links = dict(links)
        self._io_timeout = io_timeout
        self._inbox: dict[int, queue.Queue[tuple[int, list[NDArray[np.generic]]] | _Broken]] = {
            peer: queue.Queue() for peer in links
        }
        self._broken: TransportError | None = None
        self._readers: list[asyncio.Task[None]] = []

    # -- loop side ---------------------------------------------------------------------------

    def _start_readers(self) -> None:
        loop = asyncio.get_running_loop()
        self._readers = [loop.create_task(self._read_loop(link)) for link in self._links.values()]

    async def _read_loop(self, link: _Link) -> None:
        assembly: _Assembly | None = None
        last_round = -1
        try:
            while True:
                incoming = await link.read()
                if incoming is grpc.aio.EOF or incoming is None:
                    # The peer ended the stream after everything it sent: wake up only
                    # whoever waits for this peer (others' messages may still arrive).
                    link.ended.set()
                    self._inbox[link.peer].put(_Broken(PeerLost(f"party {link.peer} left")))
                    return
                frame, data = incoming
                if frame.kind == pb.Frame.ABORT:
                    raise PeerLost(f"party {link.peer} left the mesh: {frame.reason}")
                self._check(frame, link.peer)
                if frame.kind == pb.Frame.DATA:
                    if assembly is not None or frame.round <= last_round:
                        raise ProtocolViolation(
                            f"party {link.peer} sent round {frame.round} out of order"
                        )
                    assembly, last_round = _Assembly(frame), frame.round
                elif frame.kind != pb.Frame.CHUNK or assembly is None:
                    raise ProtocolViolation(f"party {link.peer} sent an unexpected frame")
                elif frame.round != assembly.round:
                    raise ProtocolViolation(f"party {link.peer} mixed rounds within a message")
                assembly.add(data)
                if frame.last:
                    if not assembly.complete():
                        raise ProtocolViolation(f"party {link.peer} sent a truncated message")
                    self._inbox[link.peer].put((assembly.round, assembly.arrays))
                    assembly = None
        except TransportError as error:
            link.ended.set()
            self._break(error)
        except grpc.aio.AioRpcError as error:
            link.ended.set()
            self._break(PeerLost(f"link to party {link.peer} failed: {error.details()}"))
        except asyncio.CancelledError:
            link.ended.set()
            self._break(PeerLost("the mesh was closed"))
            raise

    def _check(self, frame: pb.Frame, peer: int) -> None:
        if frame.job_id != self._identity.job_id or frame.worker != self._identity.worker:
            raise ProtocolViolation(
                f"party {peer} sent a frame for job {frame.job_id!r} worker {frame.worker}"
            )
        if frame.sender != peer:
            raise ProtocolViolation(
                f"party {peer} sent a frame claiming to be party {frame.sender}"
            )

    def _break(self, error: TransportError) -> None:
        if self._broken is None or (
            isinstance(error, ProtocolViolation) and not isinstance(self._broken, ProtocolViolation)
        ):
            self._broken = error
        for box in self._inbox.values():
            box.put(_Broken(error))

    async def _send(self, link: _Link, round_number: int, arrays: Message) -> None:
        for frame in _frames(self._identity, round_number, arrays):
            await link.write(frame)

    async def _shutdown(self, reason: str) -> None:
        """Close the mesh.  Without a reason (the job is done here) the close is graceful:
        the acceptor ends its calls, which delivers what it wrote; the dialler half-closes
        and waits (a few seconds at most) for the acceptor to end the call.
        """
        if not reason:
            for link in self._links.values():
                if link.done_writing is None:
                    link.close()
            for link in self._links.values():
                if link.done_writing is not None and not link.closed.is_set():
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(link.done_writing(), 5.0)
                        await asyncio.wait_for(link.ended.wait(), 10.0)
        for link in self._links.values():
            if reason and not link.closed.is_set():
                with contextlib.suppress(Exception):
                    frame = self._identity.frame(pb.Frame.ABORT, reason=reason)
                    await asyncio.wait_for(link.write(frame), 1.0)
        for task in self._readers:
            task.cancel()
        for link in self._links.values():
            link.close()

    # -- engine side ---------------------------------------------------------------------------

    @property
    def broken(self) -> TransportError | None:
        """Why this mesh broke, or None while it works."""
        return self._broken

    def lost(self, peer: int) -> TransportError | None:
        """Why the link to ``peer`` is gone, or None while it works; reads no message.

        For a worker blocked outside the engine's rounds (waiting for party 0's tuple
        lease), so it can rebuild the mesh instead of waiting for a party that left.
        """
        link = self._links.get(peer)
        if self._broken is None and link is not None and link.ended.is_set():
            return PeerLost(f"party {peer} left")
        return self._broken

    def _exchange(
        self, outgoing: Mapping[int, Message], expect: list[int]
    ) -> dict[int, list[NDArray[np.generic]]]:
        if self._broken is not None:
            raise self._broken
        sends: list[tuple[int, Future[None]]] = [
            (peer, self._endpoint.submit(self._send(self._links[peer], self.rounds, arrays)))
            for peer, arrays in outgoing.items()
        ]
        received = {peer: self._receive(peer) for peer in expect}
        for peer, sent in sends:
            try:
                sent.result(timeout=self._io_timeout)
            except TransportError:
                raise
            except Exception as error:  # gRPC write failures: the link is gone
                raise PeerLost(f"sending to party {peer} failed: {error}") from error
        return received

    def _receive(self, peer: int) -> list[NDArray[np.generic]]:
        deadline = time.monotonic() + self._io_timeout
        while True:
            try:
                item = self._inbox[peer].get(
                    timeout=min(1.0, max(0.01, deadline - time.monotonic()))
                )
            except queue.Empty:
                if time.monotonic() > deadline:
                    raise PeerLost(
                        f"party {peer} sent nothing for {self._io_timeout:.0f} s"
                    ) from None
                continue
            if isinstance(item, _Broken):
                raise item.error
            round_number, arrays = item
            if round_number != self.rounds:
                raise ProtocolViolation(
                    f"party {peer} is in round {round_number}, this party in round {self.rounds}"
                )
            return arrays

    def close(self, reason: str = "") -> None:
        """Close every link of this mesh; with a reason, tell the peers first."""
        with contextlib.suppress(Exception):
            self._endpoint.submit(self._shutdown(reason)).result(timeout=5.0)


class _Servicer(pb_grpc.PartyLinkServicer):
    def __init__(self, endpoint: PartyLinkEndpoint) -> None:
        self.endpoint = endpoint

    async def Exchange(  # noqa: N802 - the gRPC method name
        self, request_iterator: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        incoming = await context.read()
        if incoming is grpc.aio.EOF:
            return
        first = incoming.frame
        endpoint = self.endpoint
        identity = endpoint.identity
        if first.job_id != identity.job_id or first.worker != identity.worker:
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"party {identity.party} runs no worker {first.worker} of job {first.job_id!r} "
                "on this port",
            )
        if first.kind != pb.Frame.HELLO or not identity.party < first.sender < identity.parties:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"expected a hello from a party in {identity.party + 1}..{identity.parties - 1}",
            )
        if endpoint.tls is not None and peer_party(context) != first.sender:
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"the client certificate does not name {party_name(first.sender)}",
            )
        link = _Link(first.sender, context.read, context.write, lambda: None)
        endpoint._offer(link, first.hello)
        await link.closed.wait()


_EXCHANGE = "/tally.v1.PartyLink/Exchange"


def _exchange_call(channel: grpc.aio.Channel) -> Any:
    """A new ``Exchange`` stream on ``channel`` whose writes take :func:`_frames` output."""
    return channel.stream_stream(
        _EXCHANGE, request_serializer=_serialize, response_deserializer=_parse
    )()


def _add_servicer(servicer: _Servicer, server: grpc.aio.Server) -> None:
    """``add_PartyLinkServicer_to_server`` with the serializer of :func:`_exchange_call`."""
    handlers = {
        "Exchange": grpc.stream_stream_rpc_method_handler(
            servicer.Exchange,
            request_deserializer=_parse,
            response_serializer=_serialize,
        )
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("tally.v1.PartyLink", handlers),)
    )


class PartyLinkEndpoint:
    """A worker's PartyLink: event-loop thread, server for higher ids, meshes on demand.

    ``locate(peer)`` (a coroutine run on the endpoint's loop) returns the address
    of ``peer``'s worker for this job, or None while it is not up.
    """

    def __init__(
        self,
        identity: LinkIdentity,
        tls: PartyTLS | None,
        locate: Callable[[int], Awaitable[str | None]],
        host: str = "127.0.0.1",
        io_timeout: float = 120.0,
    ) -> None:
        if tls is None:
            log.warning(
                "PartyLink for job %s runs WITHOUT TLS (development mode only)", identity.job_id
            )
        self.identity = identity
        self.tls = tls
        self._locate = locate
        self._host = host
        self._io_timeout = io_timeout
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="link")
        self._server: grpc.aio.Server | None = None
        self._pending: dict[int, tuple[_Link, pb.Hello]] = {}
        self._pending_changed: asyncio.Event | None = None
        self._mesh: PartyLinkTransport | None = None
        self.address = ""

    # -- life cycle ----------------------------------------------------------------------------

    def start(self) -> str:
        """Start the loop thread and the server; returns the ``host:port`` peers dial."""
        self._thread.start()
        self.address = self.submit(self._start_server()).result(timeout=30.0)
        return self.address

    async def _start_server(self) -> str:
        self._pending_changed = asyncio.Event()
        server = grpc.aio.server(options=SERVER_OPTIONS)
        _add_servicer(_Servicer(self), server)
        bind = f"{self._host}:0"
        if self.tls is None:
            port = server.add_insecure_port(bind)
        else:
            port = server.add_secure_port(bind, self.tls.server_credentials())
        await server.start()
        self._server = server
        return f"{self._host}:{port}"

    def submit(self, coroutine: Awaitable[Any]) -> Future[Any]:
        """Run a coroutine on the endpoint's loop from any thread."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop)  # type: ignore[arg-type]

    def close(self) -> None:
        """Stop the server and the loop thread."""
        if not self._thread.is_alive():
            return
        with contextlib.suppress(Exception):
            self.submit(self._stop()).result(timeout=10.0)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10.0)

    async def _stop(self) -> None:
        if self._mesh is not None:
            await self._mesh._shutdown("")
        for link, _ in self._pending.values():
            link.close()
        if self._server is not None:
            await self._server.stop(grace=0.5)

    # -- meshes ----------------------------------------------------------------------------------

    def _offer(self, link: _Link, hello: pb.Hello) -> None:
        """A peer with a higher id opened a stream (loop thread)."""
        previous = self._pending.pop(link.peer, None)
        if previous is not None:
            previous[0].close()
        self._pending[link.peer] = (link, hello)
        mesh = self._mesh
        if mesh is not None and mesh.broken is None:
            mesh._break(PeerLost(f"party {link.peer} reconnected"))
        assert self._pending_changed is not None  # noqa: S101 - set by start()
        self._pending_changed.set()

    def connect(
        self, hello: pb.Hello, timeout: float
    ) -> tuple[PartyLinkTransport, dict[int, pb.Hello]]:
        """Build a mesh with every peer within ``timeout`` seconds; returns it and their hellos.

        Raises :class:`PeerLost` naming the peers that could not be reached.
        """
        result: tuple[PartyLinkTransport, dict[int, pb.Hello]] = self.submit(
            self._connect(hello, timeout)
        ).result(timeout=timeout + 30.0)
        return result

    async def _connect(
        self, hello: pb.Hello, timeout: float
    ) -> tuple[PartyLinkTransport, dict[int, pb.Hello]]:
        if self._mesh is not None:
            await self._mesh._shutdown("rebuilding the mesh")
            self._mesh = None
        deadline = time.monotonic() + timeout
        party = self.identity.party
        lower = list(range(party))
        higher = list(range(party + 1, self.identity.parties))
        problems: dict[int, str] = {}
        dials = {
            peer: asyncio.ensure_future(self._dial(peer, hello, deadline, problems))
            for peer in lower
        }
        accepted = await self._accept(higher, hello, deadline)
        links: dict[int, _Link] = {}
        hellos: dict[int, pb.Hello] = {}
        for peer, (link, peer_hello) in accepted.items():
            links[peer], hellos[peer] = link, peer_hello
        for peer, task in dials.items():
            outcome = await task
            if outcome is not None:
                links[peer], hellos[peer] = outcome
        missing = [p for p in range(self.identity.parties) if p != party and p not in links]
        if missing:
            for link in links.values():
                link.close()
            details = "; ".join(f"party {p}: {problems.get(p, 'did not connect')}" for p in missing)
            raise PeerLost(f"no PartyLink to {missing} within {timeout:.0f} s ({details})")
        mesh = PartyLinkTransport(self, links, self._io_timeout)
        mesh._start_readers()
        self._mesh = mesh
        return mesh, hellos

    async def _accept(
        self, peers: list[int], hello: pb.Hello, deadline: float
    ) -> dict[int, tuple[_Link, pb.Hello]]:
        assert self._pending_changed is not None  # noqa: S101 - set by start()
        out: dict[int, tuple[_Link, pb.Hello]] = {}
        while True:
            for peer in peers:
                if peer in self._pending and peer not in out:
                    link, peer_hello = self._pending.pop(peer)
                    try:
                        await link.write(self.identity.frame(pb.Frame.HELLO, hello=hello))
                        out[peer] = (link, peer_hello)
                    except Exception:  # the dialer went away again; wait for its next try
                        link.close()
            remaining = deadline - time.monotonic()
            if len(out) == len(peers) or remaining <= 0:
                return out
            self._pending_changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._pending_changed.wait(), min(remaining, 0.5))

    async def _dial(
        self, peer: int, hello: pb.Hello, deadline: float, problems: dict[int, str]
    ) -> tuple[_Link, pb.Hello] | None:
        while time.monotonic() < deadline:
            try:
                address = await asyncio.wait_for(self._locate(peer), 5.0)
            except Exception as error:  # the peer's service is down or refuses us
                address, problems[peer] = None, f"its execution service did not answer ({error})"
            if address:
                outcome = await self._try_dial(peer, address, hello, deadline, problems)
                if outcome is not None:
                    return outcome
            elif peer not in problems:
                problems[peer] = "its worker is not up"
            await asyncio.sleep(0.2)
        return None

    async def _try_dial(
        self, peer: int, address: str, hello: pb.Hello, deadline: float, problems: dict[int, str]
    ) -> tuple[_Link, pb.Hello] | None:
        channel = secure_channel(address, self.tls, peer)
        call = _exchange_call(channel)
        try:
            await call.write(self.identity.frame(pb.Frame.HELLO, hello=hello))
            reply = await asyncio.wait_for(call.read(), max(0.5, deadline - time.monotonic()))
        except (grpc.aio.AioRpcError, TimeoutError, asyncio.CancelledError) as error:
            call.cancel()
            await channel.close()
            detail = error.details() if isinstance(error, grpc.aio.AioRpcError) else "timed out"
            problems[peer] = f"{address}: {detail}"
            if isinstance(error, grpc.aio.AioRpcError) and error.code() in (
                grpc.StatusCode.PERMISSION_DENIED,
                grpc.StatusCode.NOT_FOUND,
            ):
                problems[peer] = f"{address} refused this worker: {detail}"
            return None
        if (
            reply is grpc.aio.EOF
            or reply.frame.kind != pb.Frame.HELLO
            or reply.frame.sender != peer
        ):
            call.cancel()
            await channel.close()
            problems[peer] = f"{address} did not answer with party {peer}'s hello"
            return None

        def close() -> None:
            call.cancel()
            asyncio.ensure_future(channel.close())

        return _Link(peer, call.read, call.write, close, call.done_writing), reply.frame.hello
