"""PartyLink: the engine's ``Transport`` between the workers of one job, over TLS sockets.

One job worker (one partition of one job) at each party owns a
:class:`PartyLinkEndpoint`: a listener for the peers with higher ids and dials to
the peers with lower ids (the higher id dials, as in ``SocketTransport``), one
mutually authenticated TLS 1.3 connection per pair of parties.  A *mesh* is one
generation of those connections; :meth:`PartyLinkEndpoint.connect` builds it and
returns a :class:`PartyLinkTransport` for the engine plus every peer's ``Hello``
(its resume state, see :mod:`tally.execution.recovery`).  When any link breaks
(a peer died, restarted or gave up) every ``exchange`` in progress raises
:class:`PeerLost`, and the worker builds the next mesh.

Reaching a peer: a worker dials the *peer party's public endpoint* (what
``locate`` returns: the address of its execution service's gateway,
:mod:`tally.execution.gateway`) with the server name
:func:`~tally.execution.gateway.route_name`; the gateway splices the connection,
still encrypted, to the right local worker.  The TLS handshake is between the two
workers: the dialler checks that the server's certificate names ``party-<peer>``,
the listener that the client certificate names the party the hello claims.

Wire format (one frame): 16 bytes ``TPL1``, the length of the frame's fields and
the length of its data (big-endian u32, u64); the fields (a ``Frame`` protobuf
without ``data``: job, worker, sender, round, kind, array headers, hello or
reason); then the data, the arrays' bytes back to back.  One engine round to one
peer is one ``DATA`` frame, received with ``recv_into`` straight into arrays
allocated from its headers (no copy after the socket).  Every frame names the
job, the worker, the sender and the round.  A connection whose hello is for
another job or worker, or whose sender is not the party its certificate names, is
refused with an ``ABORT`` frame saying why; a frame out of order (a round that
does not increase, a kind that does not belong, a sender that changed, headers
that do not add up to the data length) breaks the link with a
:class:`ProtocolViolation`, which fails the job.

Threading: the engine calls ``exchange`` synchronously from the worker's main
thread.  Each link has a reader thread (frames → a queue per peer) and a writer
thread (``sendall`` of the engine's arrays, no copy), like ``SocketTransport``.
One TLS connection is read by one thread and written by another; TLS 1.3 with
no session tickets (``num_tickets = 0``), no renegotiation and no key updates
keeps the read and write state of the connection disjoint, and a link is shut
down at the socket before it is closed, so no thread ever uses a freed
connection.  ``locate`` (a coroutine: a PartyControl call) runs on a small event
loop thread of the endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import queue
import socket
import ssl
import struct
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf.message import DecodeError
from numpy.typing import NDArray

from tally._generated import partylink_pb2 as pb
from tally.common.tls import party_index
from tally.execution.gateway import ROUTE_PREFIX, accept_loop, host_port, route_name
from tally.execution.tls import PartyTLS, party_name
from tally.mpc.transport import Message, Transport, TransportError

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 16 << 30
"""Largest round message accepted from a peer (guards the receive allocation)."""
MAX_FIELDS = 1 << 20
"""Largest encoded frame fields (headers, hello, reason) accepted from a peer."""
MAGIC = b"TPL1"
HEAD = struct.Struct(">4sIQ")
"""Frame head: magic, length of the fields, length of the data."""
SOCKET_BUFFER = 4 << 20
HANDSHAKE_TIMEOUT_S = 10.0


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


# -- TLS ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Contexts:
    server: ssl.SSLContext
    client: ssl.SSLContext


def _contexts(tls: PartyTLS) -> _Contexts:
    """TLS 1.3 contexts that present this party's certificate and require the peer's.

    ``load_cert_chain`` reads files: the PEMs go to a private temporary directory
    that is removed as soon as they are loaded.
    """
    with tempfile.TemporaryDirectory(prefix="tally-link-") as directory:
        cert, key = Path(directory, "cert.pem"), Path(directory, "key.pem")
        cert.write_bytes(tls.certificate)
        key.touch(mode=0o600)
        key.write_bytes(tls.key)

        def context(protocol: ssl._SSLMethod) -> ssl.SSLContext:
            made = ssl.SSLContext(protocol)
            made.minimum_version = ssl.TLSVersion.TLSv1_3
            made.verify_mode = ssl.CERT_REQUIRED
            made.check_hostname = False  # the party name is checked after the handshake
            made.load_verify_locations(cadata=tls.ca.decode())
            made.load_cert_chain(cert, key)
            return made

        server, client = context(ssl.PROTOCOL_TLS_SERVER), context(ssl.PROTOCOL_TLS_CLIENT)
    server.num_tickets = 0  # no post-handshake writes (see the module docstring)
    return _Contexts(server=server, client=client)


def certificate_party(sock: ssl.SSLSocket) -> int | None:
    """The party the peer's (verified) certificate names by its common name, else None."""
    certificate: dict[str, Any] = dict(sock.getpeercert() or {})
    for rdn in certificate.get("subject", ()):
        for pair in rdn:
            if pair[0] == "commonName":
                return party_index(str(pair[1]))
    return None


# -- frames ------------------------------------------------------------------------------------


def encode_head(frame: pb.Frame, data_bytes: int = 0) -> bytes:
    """A frame's head and fields (the data, if any, follows as raw bytes)."""
    fields: bytes = frame.SerializeToString()
    return HEAD.pack(MAGIC, len(fields), data_bytes) + fields


def parse_head(raw: bytes) -> tuple[int, int]:
    """(length of the fields, length of the data) of a frame head; refuses what is out of bounds."""
    if len(raw) != HEAD.size:
        raise ProtocolViolation("a peer sent a truncated frame")
    magic, fields, data = HEAD.unpack(raw)
    if magic != MAGIC:
        raise ProtocolViolation("a peer sent a malformed frame (not a PartyLink frame)")
    if fields > MAX_FIELDS:
        raise ProtocolViolation("a peer sent frame fields over the size limit")
    if data > MAX_MESSAGE_BYTES:
        raise ProtocolViolation("a round message exceeds the size limit")
    return fields, data


def parse_fields(raw: bytes) -> pb.Frame:
    """A frame's fields; malformed protobuf is a protocol violation."""
    try:
        frame: pb.Frame = pb.Frame.FromString(raw)
    except DecodeError as error:
        raise ProtocolViolation(f"a peer sent a malformed frame: {error}") from None
    if frame.data:
        raise ProtocolViolation("a peer sent data inside the frame fields")
    return frame


def allocate(frame: pb.Frame, data_bytes: int) -> list[NDArray[np.generic]]:
    """Empty arrays for a DATA frame's headers; their sizes must add up to ``data_bytes``."""
    arrays: list[NDArray[np.generic]] = []
    total = 0
    for header in frame.arrays:
        try:
            dtype = np.dtype(header.dtype)
        except TypeError:
            raise ProtocolViolation(f"a peer sent an unknown dtype {header.dtype!r}") from None
        if dtype.hasobject or dtype.itemsize == 0:
            raise ProtocolViolation(f"refusing arrays of dtype {dtype}")
        shape = tuple(int(s) for s in header.shape)
        nbytes = math.prod(shape) * dtype.itemsize
        total += nbytes
        if total > data_bytes or total > MAX_MESSAGE_BYTES:
            raise ProtocolViolation("a peer's array headers declare more bytes than its frame")
        arrays.append(np.empty(shape, dtype=dtype))
    if total != data_bytes:
        raise ProtocolViolation("a peer sent more bytes than its array headers declare")
    return arrays


def _recv_exact(sock: socket.socket, view: memoryview) -> bool:
    """Fill ``view``; False if the peer closed before the first byte, PeerLost if mid-way."""
    first = True
    while len(view):
        got = sock.recv_into(view)
        if got == 0:
            if first:
                return False
            raise PeerLost("the peer closed the connection in the middle of a frame")
        first = False
        view = view[got:]
    return True


def read_frame(sock: socket.socket) -> tuple[pb.Frame, int] | None:
    """The next frame's fields and its data length (the data is still to be read); None at EOF."""
    head = bytearray(HEAD.size)
    if not _recv_exact(sock, memoryview(head)):
        return None
    fields, data = parse_head(bytes(head))
    raw = bytearray(fields)
    if fields and not _recv_exact(sock, memoryview(raw)):
        raise PeerLost("the peer closed the connection in the middle of a frame")
    return parse_fields(bytes(raw)), data


def read_message(sock: socket.socket) -> tuple[pb.Frame, list[NDArray[np.generic]]] | None:
    """The next frame and, for ``DATA``, its arrays (read straight into them); None at EOF.

    Any other kind of frame must carry no data.
    """
    incoming = read_frame(sock)
    if incoming is None:
        return None
    frame, data_bytes = incoming
    if frame.kind != pb.Frame.DATA:
        if data_bytes:
            raise ProtocolViolation("a peer sent data with a frame that carries none")
        return frame, []
    arrays = allocate(frame, data_bytes)
    for array in arrays:
        if array.nbytes and not _recv_exact(sock, array.reshape(-1).view(np.uint8).data):
            raise PeerLost("the peer closed the connection in the middle of a message")
    return frame, arrays


def _views(arrays: Message) -> tuple[list[pb.ArrayHeader], list[memoryview]]:
    headers, views = [], []
    for array in arrays:
        contiguous = np.ascontiguousarray(array)
        if contiguous.dtype.hasobject:
            raise TransportError(f"cannot send arrays of dtype {contiguous.dtype}")
        headers.append(pb.ArrayHeader(dtype=contiguous.dtype.str, shape=list(contiguous.shape)))
        if contiguous.nbytes:
            views.append(contiguous.data.cast("B"))
    return headers, views


def _tune(sock: socket.socket) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)


def _shutdown(sock: socket.socket, how: int) -> None:
    """Shut the TCP connection down under the TLS layer (``SSLSocket.shutdown`` would drop
    the TLS object while another thread may be reading through it)."""
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, how)


# -- links -------------------------------------------------------------------------------------


class _Link:
    """One connection to one peer: a reader and a writer thread once it is in a mesh."""

    def __init__(self, peer: int, sock: socket.socket) -> None:
        self.peer = peer
        self.sock = sock
        self.outbox: queue.Queue[tuple[list[bytes | memoryview], Future[None]] | None] = (
            queue.Queue()
        )
        self.ended = threading.Event()
        """Set when the peer ended the connection (end of stream or an error)."""
        self.closed = threading.Event()
        self._threads: list[threading.Thread] = []

    def write_now(self, frame: pb.Frame, timeout: float) -> None:
        """Write one frame without data, before the link has a writer thread."""
        self.sock.settimeout(timeout)
        try:
            self.sock.sendall(encode_head(frame))
        finally:
            self.sock.settimeout(None)

    def start(self, read_loop: Callable[[_Link], None]) -> None:
        self._threads = [
            threading.Thread(target=read_loop, args=(self,), daemon=True, name="link-read"),
            threading.Thread(target=self._write_loop, daemon=True, name="link-write"),
        ]
        for thread in self._threads:
            thread.start()

    def send(self, parts: list[bytes | memoryview]) -> Future[None]:
        done: Future[None] = Future()
        if self.closed.is_set():
            done.set_exception(PeerLost(f"the link to party {self.peer} is closed"))
        else:
            self.outbox.put((parts, done))
        return done

    def _write_loop(self) -> None:
        while (item := self.outbox.get()) is not None:
            parts, done = item
            try:
                for part in parts:
                    self.sock.sendall(part)
                done.set_result(None)
            except (OSError, ValueError) as error:
                done.set_exception(PeerLost(f"sending to party {self.peer} failed: {error}"))
                self._drain(error)
                return

    def _drain(self, error: BaseException) -> None:
        while True:
            try:
                item = self.outbox.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                item[1].set_exception(PeerLost(f"sending to party {self.peer} failed: {error}"))

    def close(self, graceful: bool = False) -> None:
        """Stop the threads and close.

        Graceful: finish writing, half-close, then wait for the peer's end.
        """
        if self.closed.is_set():
            return
        self.closed.set()
        self.outbox.put(None)
        if graceful:
            writer = self._threads[1] if self._threads else None
            if writer is not None:
                writer.join(timeout=10.0)
            _shutdown(self.sock, socket.SHUT_WR)
            self.ended.wait(timeout=10.0)
        _shutdown(self.sock, socket.SHUT_RDWR)
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=10.0)
        with contextlib.suppress(OSError):
            self.sock.close()


class _Broken:
    """Queued to wake up an ``exchange`` that waits on a mesh that broke."""

    def __init__(self, error: TransportError) -> None:
        self.error = error


class PartyLinkTransport(Transport):
    """One mesh generation: the engine's ``Transport`` over this worker's links."""

    def __init__(
        self, identity: LinkIdentity, links: Mapping[int, _Link], io_timeout: float
    ) -> None:
        super().__init__(identity.party, identity.parties)
        self._identity = identity
        self._links = dict(links)
        self._io_timeout = io_timeout
        self._inbox: dict[int, queue.Queue[tuple[int, list[NDArray[np.generic]]] | _Broken]] = {
            peer: queue.Queue() for peer in links
        }
        self._broken: TransportError | None = None
        self._closing = False

    def _start(self) -> None:
        for link in self._links.values():
            link.start(self._read_loop)

    # -- reader threads ------------------------------------------------------------------------

    def _read_loop(self, link: _Link) -> None:
        last_round = -1
        try:
            while True:
                incoming = read_message(link.sock)
                if incoming is None:
                    # The peer ended the stream after everything it sent: wake up only
                    # whoever waits for this peer (others' messages may still arrive).
                    link.ended.set()
                    self._inbox[link.peer].put(_Broken(PeerLost(f"party {link.peer} left")))
                    return
                frame, arrays = incoming
                if frame.kind == pb.Frame.ABORT:
                    raise PeerLost(f"party {link.peer} left the mesh: {frame.reason}")
                self._check(frame, link.peer)
                if frame.kind != pb.Frame.DATA:
                    raise ProtocolViolation(f"party {link.peer} sent an unexpected frame")
                if frame.round <= last_round:
                    raise ProtocolViolation(
                        f"party {link.peer} sent round {frame.round} out of order"
                    )
                last_round = frame.round
                self._inbox[link.peer].put((frame.round, arrays))
        except TransportError as error:
            link.ended.set()
            self._break(error)
        except (OSError, ValueError) as error:
            link.ended.set()
            if not self._closing:
                self._break(PeerLost(f"link to party {link.peer} failed: {error}"))
            else:
                self._break(PeerLost("the mesh was closed"))

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
        sends: list[tuple[int, Future[None]]] = []
        for peer, arrays in outgoing.items():
            headers, views = _views(arrays)
            frame = self._identity.frame(pb.Frame.DATA, round=self.rounds, arrays=headers)
            head = encode_head(frame, sum(len(view) for view in views))
            sends.append((peer, self._links[peer].send([head, *views])))
        received = {peer: self._receive(peer) for peer in expect}
        for peer, sent in sends:
            try:
                sent.result(timeout=self._io_timeout)
            except TransportError:
                raise
            except Exception as error:  # a send that never finished: the link is gone
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
        """Close every link of this mesh.

        With a reason, tell the peers first (an ``ABORT`` frame).  Without one (the job
        is done here) the close is graceful: what was written is delivered, each side
        half-closes and waits (a few seconds at most) for the other's end.
        """
        self._closing = True
        links = list(self._links.values())
        if reason:
            aborts = [
                link.send([encode_head(self._identity.frame(pb.Frame.ABORT, reason=reason))])
                for link in links
            ]
            for sent in aborts:
                with contextlib.suppress(Exception):
                    sent.result(timeout=1.0)
        closers = [
            threading.Thread(target=link.close, kwargs={"graceful": not reason}, daemon=True)
            for link in links
        ]
        for thread in closers:
            thread.start()
        for thread in closers:
            thread.join(timeout=30.0)


# -- endpoint ----------------------------------------------------------------------------------


class PartyLinkEndpoint:
    """A worker's PartyLink: a listener for higher ids, meshes on demand.

    ``locate(peer)`` (a coroutine run on the endpoint's loop) returns the ``host:port``
    to dial for ``peer``'s worker of this job — the peer party's public endpoint, whose
    gateway routes by :func:`~tally.execution.gateway.route_name` — or None while the
    worker is not up.
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
        self._contexts = _contexts(tls) if tls is not None else None
        self._locate = locate
        self._host = host
        self._io_timeout = io_timeout
        self._loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(
            target=self._loop.run_forever, daemon=True, name="link-control"
        )
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._stopped = threading.Event()
        self._pending: dict[int, tuple[_Link, pb.Hello]] = {}
        self._pending_changed = threading.Condition()
        self._mesh: PartyLinkTransport | None = None
        self.address = ""

    # -- life cycle ----------------------------------------------------------------------------

    def start(self) -> str:
        """Start listening; returns the ``host:port`` this worker accepts on (locally)."""
        self._loop_thread.start()
        listener = socket.create_server((self._host, 0), reuse_port=False, backlog=64)
        listener.settimeout(0.5)
        self._listener = listener
        self._accept_thread = threading.Thread(
            target=accept_loop,
            args=(listener, self._stopped, self._admit),
            daemon=True,
            name="link-accept",
        )
        self._accept_thread.start()
        self.address = f"{self._host}:{listener.getsockname()[1]}"
        return self.address

    def submit(self, coroutine: Awaitable[Any]) -> Future[Any]:
        """Run a coroutine on the endpoint's loop from any thread."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop)  # type: ignore[arg-type]

    def close(self) -> None:
        """Stop listening, close the mesh and what is pending, stop the loop thread."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        if self._mesh is not None:
            self._mesh.close()
        with self._pending_changed:
            pending = list(self._pending.values())
            self._pending.clear()
        for link, _ in pending:
            link.close()
        if self._accept_thread is not None:
            self._accept_thread.join(timeout=5.0)
        if self._listener is not None:
            self._listener.close()
        if self._loop_thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._loop_thread.join(timeout=10.0)

    # -- accepting -----------------------------------------------------------------------------

    def _admit(self, conn: socket.socket) -> None:
        """Handshake, read the hello and check it; a refused dialler is told why."""
        _tune(conn)
        conn.settimeout(HANDSHAKE_TIMEOUT_S)
        sock: socket.socket = conn
        try:
            if self._contexts is not None:
                sock = self._contexts.server.wrap_socket(conn, server_side=True)
            else:
                _skip_route_line(conn)
            incoming = read_frame(sock)
        except (OSError, TransportError, ssl.SSLError) as error:
            log.info("PartyLink refused a connection: %s", error)
            with contextlib.suppress(OSError):
                sock.close()
            return
        if incoming is None:
            sock.close()
            return
        first, data_bytes = incoming
        identity = self.identity
        problem = ""
        if first.job_id != identity.job_id or first.worker != identity.worker:
            problem = (
                f"party {identity.party} runs no worker {first.worker} of job {first.job_id!r} here"
            )
        elif (
            first.kind != pb.Frame.HELLO
            or data_bytes
            or not (identity.party < first.sender < identity.parties)
        ):
            problem = (
                f"expected a hello from a party in {identity.party + 1}..{identity.parties - 1}"
            )
        elif isinstance(sock, ssl.SSLSocket) and certificate_party(sock) != first.sender:
            problem = f"the client certificate does not name {party_name(first.sender)}"
        link = _Link(first.sender, sock)
        if problem:
            with contextlib.suppress(OSError):
                link.write_now(identity.frame(pb.Frame.ABORT, reason=problem), 2.0)
            link.close()
            return
        sock.settimeout(None)
        self._offer(link, first.hello)

    def _offer(self, link: _Link, hello: pb.Hello) -> None:
        """A peer with a higher id connected and said hello."""
        with self._pending_changed:
            previous = self._pending.pop(link.peer, None)
            self._pending[link.peer] = (link, hello)
            self._pending_changed.notify_all()
        if previous is not None:
            previous[0].close()
        mesh = self._mesh
        if mesh is not None and mesh.broken is None:
            mesh._break(PeerLost(f"party {link.peer} reconnected"))

    # -- meshes --------------------------------------------------------------------------------

    def connect(
        self, hello: pb.Hello, timeout: float
    ) -> tuple[PartyLinkTransport, dict[int, pb.Hello]]:
        """Build a mesh with every peer within ``timeout`` seconds; returns it and their hellos.

        Raises :class:`PeerLost` naming the peers that could not be reached.
        """
        if self._mesh is not None:
            self._mesh.close(reason="rebuilding the mesh")
            self._mesh = None
        deadline = time.monotonic() + timeout
        party = self.identity.party
        lower = list(range(party))
        higher = list(range(party + 1, self.identity.parties))
        problems: dict[int, str] = {}
        dialled: dict[int, tuple[_Link, pb.Hello] | None] = {}

        def dial(peer: int) -> None:
            dialled[peer] = self._dial(peer, hello, deadline, problems)

        threads = [threading.Thread(target=dial, args=(peer,), daemon=True) for peer in lower]
        for thread in threads:
            thread.start()
        accepted = self._accept(higher, hello, deadline)
        for thread in threads:
            thread.join()
        links: dict[int, _Link] = {}
        hellos: dict[int, pb.Hello] = {}
        for peer, (link, peer_hello) in accepted.items():
            links[peer], hellos[peer] = link, peer_hello
        for peer in lower:
            outcome = dialled.get(peer)
            if outcome is not None:
                links[peer], hellos[peer] = outcome
        missing = [p for p in range(self.identity.parties) if p != party and p not in links]
        if missing:
            for link in links.values():
                link.close()
            details = "; ".join(f"party {p}: {problems.get(p, 'did not connect')}" for p in missing)
            raise PeerLost(f"no PartyLink to {missing} within {timeout:.0f} s ({details})")
        mesh = PartyLinkTransport(self.identity, links, self._io_timeout)
        mesh._start()
        self._mesh = mesh
        return mesh, hellos

    def _accept(
        self, peers: list[int], hello: pb.Hello, deadline: float
    ) -> dict[int, tuple[_Link, pb.Hello]]:
        out: dict[int, tuple[_Link, pb.Hello]] = {}
        while True:
            with self._pending_changed:
                ready = [p for p in peers if p in self._pending and p not in out]
                taken = [(p, self._pending.pop(p)) for p in ready]
            for peer, (link, peer_hello) in taken:
                try:
                    link.write_now(self.identity.frame(pb.Frame.HELLO, hello=hello), 5.0)
                    out[peer] = (link, peer_hello)
                except OSError:  # the dialler went away again; wait for its next try
                    link.close()
            remaining = deadline - time.monotonic()
            if len(out) == len(peers) or remaining <= 0:
                return out
            with self._pending_changed:
                if not any(p in self._pending for p in peers if p not in out):
                    self._pending_changed.wait(min(remaining, 0.5))

    def _dial(
        self, peer: int, hello: pb.Hello, deadline: float, problems: dict[int, str]
    ) -> tuple[_Link, pb.Hello] | None:
        while time.monotonic() < deadline and not self._stopped.is_set():
            try:
                address = self.submit(self._locate(peer)).result(timeout=10.0)
            except Exception as error:  # the peer's service is down, refuses us, or the
                # job ended there (the caller's ``locate`` says which)
                address, problems[peer] = None, f"locating its worker failed: {error}"
            if address:
                outcome = self._try_dial(peer, address, hello, deadline, problems)
                if outcome is not None:
                    return outcome
            elif peer not in problems:
                problems[peer] = "its worker is not up"
            time.sleep(0.2)
        return None

    def _try_dial(
        self, peer: int, address: str, hello: pb.Hello, deadline: float, problems: dict[int, str]
    ) -> tuple[_Link, pb.Hello] | None:
        name = route_name(self.identity.job_id, self.identity.worker, peer)
        wait = max(0.5, min(HANDSHAKE_TIMEOUT_S, deadline - time.monotonic()))
        sock: socket.socket | None = None
        try:
            raw = socket.create_connection(host_port(address), timeout=wait)
            _tune(raw)
            sock = raw
            if self._contexts is not None:
                secure = self._contexts.client.wrap_socket(raw, server_hostname=name)
                sock = secure
                if certificate_party(secure) != peer:
                    problems[peer] = (
                        f"{address} presented a certificate that does not name {party_name(peer)}"
                    )
                    sock.close()
                    return None
            else:
                raw.sendall(ROUTE_PREFIX + name.encode() + b"\n")
            sock.sendall(encode_head(self.identity.frame(pb.Frame.HELLO, hello=hello)))
            reply = read_frame(sock)
        except (OSError, TransportError, ValueError) as error:
            problems[peer] = f"{address}: {error}"
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.close()
            return None
        if reply is not None and reply[0].kind == pb.Frame.ABORT:
            problems[peer] = f"{address} refused this worker: {reply[0].reason}"
            sock.close()
            return None
        if reply is None or reply[0].kind != pb.Frame.HELLO or reply[0].sender != peer or reply[1]:
            problems[peer] = f"{address} did not answer with party {peer}'s hello"
            sock.close()
            return None
        sock.settimeout(None)
        return _Link(peer, sock), reply[0].hello


def _skip_route_line(conn: socket.socket) -> None:
    """Plaintext (development) dialers start with a route line; a direct connection keeps it."""
    head = conn.recv(len(ROUTE_PREFIX), socket.MSG_PEEK | socket.MSG_WAITALL)
    if head != ROUTE_PREFIX:
        return
    line = bytearray()
    while not line.endswith(b"\n"):
        byte = conn.recv(1)
        if not byte or len(line) > 256:
            raise PeerLost("a malformed route line")
        line += byte
