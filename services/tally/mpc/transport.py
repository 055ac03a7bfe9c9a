"""Moving share arrays between parties: the ``Transport`` interface and two implementations.

A protocol round is one call of :meth:`Transport.exchange`: every party hands
over the arrays it sends to each peer and gets back the arrays each expected
peer sent it.  Many vectors travel in one message, so a round costs one
latency however many columns it carries.  Every transport counts the bytes
it sent and the rounds it took part in.

* :class:`InProcessHub` / :class:`InProcessTransport`: all parties as threads
  of one process (tests).
* :class:`SocketTransport`: one TCP connection per pair of parties, each
  party in its own OS process (benchmarks, the embedded deployment).
"""

from __future__ import annotations

import contextlib
import queue
import socket
import struct
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

Message = Sequence[NDArray[np.generic]]


class TransportError(RuntimeError):
    """A peer is unreachable, disconnected, or sent something out of protocol."""


class Transport(ABC):
    """Send many arrays per round to chosen peers and receive theirs."""

    def __init__(self, party: int, parties: int) -> None:
        if not 0 <= party < parties:
            raise ValueError(f"party {party} is not in 0..{parties - 1}")
        self.party = party
        self.parties = parties
        self.bytes_sent = 0
        self.rounds = 0

    @property
    def peers(self) -> list[int]:
        """Every other party."""
        return [p for p in range(self.parties) if p != self.party]

    def exchange(
        self, outgoing: Mapping[int, Message], expect: Iterable[int]
    ) -> dict[int, list[NDArray[np.generic]]]:
        """One round: send ``outgoing[peer]`` to each peer, receive from each of ``expect``."""
        for peer in outgoing:
            if peer == self.party or not 0 <= peer < self.parties:
                raise ValueError(f"cannot send to party {peer}")
        self.rounds += 1
        self.bytes_sent += sum(
            sum(int(np.asarray(a).nbytes) for a in arrays) for arrays in outgoing.values()
        )
        return self._exchange(outgoing, list(expect))

    def broadcast(self, arrays: Message) -> dict[int, list[NDArray[np.generic]]]:
        """One round in which every party sends the same arrays to every other party."""
        return self.exchange({peer: arrays for peer in self.peers}, self.peers)

    @abstractmethod
    def _exchange(
        self, outgoing: Mapping[int, Message], expect: list[int]
    ) -> dict[int, list[NDArray[np.generic]]]: ...

    def close(self) -> None:  # noqa: B027 - a deliberate no-op default, not an abstract method
        """Release connections; the default has none."""


class InProcessHub:
    """Mailboxes shared by the parties of one process (one queue per ordered pair)."""

    def __init__(self, parties: int, timeout: float = 120.0) -> None:
        self.parties = parties
        self.timeout = timeout
        self._boxes = {
            (src, dst): queue.Queue[list[NDArray[np.generic]]]()
            for src in range(parties)
            for dst in range(parties)
            if src != dst
        }
        self.aborted = threading.Event()
        """Set when one party failed: the others stop waiting at once."""

    def transport(self, party: int) -> InProcessTransport:
        """The transport of one party."""
        return InProcessTransport(self, party)

    def transports(self) -> list[InProcessTransport]:
        """One transport per party."""
        return [self.transport(p) for p in range(self.parties)]


def _received(array: NDArray[np.generic]) -> NDArray[np.generic]:
    """A read-only copy: a transport may hand out views of its receive buffers (PartyLink
    does), so the engine must never write into what it received; tests hold it to that."""
    copy = np.array(array, copy=True)
    copy.flags.writeable = False
    return copy


class InProcessTransport(Transport):
    """A party's end of an :class:`InProcessHub`; arrays are copied on send."""

    def __init__(self, hub: InProcessHub, party: int) -> None:
        super().__init__(party, hub.parties)
        self._hub = hub

    def _exchange(
        self, outgoing: Mapping[int, Message], expect: list[int]
    ) -> dict[int, list[NDArray[np.generic]]]:
        for peer, arrays in outgoing.items():
            self._hub._boxes[(self.party, peer)].put([_received(a) for a in arrays])
        return {peer: self._receive(peer) for peer in expect}

    def _receive(self, peer: int) -> list[NDArray[np.generic]]:
        deadline = time.monotonic() + self._hub.timeout
        box = self._hub._boxes[(peer, self.party)]
        while True:
            if self._hub.aborted.is_set():
                raise TransportError("another party failed; this run is aborted")
            try:
                return box.get(timeout=0.2)
            except queue.Empty:
                if time.monotonic() > deadline:
                    raise TransportError(
                        f"party {peer} sent nothing for {self._hub.timeout} s"
                    ) from None


_LENGTH = struct.Struct("<Q")
_ARRAY_HEAD = struct.Struct("<16sB")


def _encode_header(round_number: int, arrays: Message) -> bytes:
    parts = [struct.pack("<QI", round_number, len(arrays))]
    for array in arrays:
        dtype = np.asarray(array).dtype
        code = dtype.str.encode()
        if len(code) > 16 or dtype.hasobject:
            raise TransportError(f"cannot send arrays of dtype {dtype}")
        parts.append(_ARRAY_HEAD.pack(code, array.ndim))
        parts.append(struct.pack(f"<{array.ndim}Q", *array.shape))
    return b"".join(parts)


def _recv_exact(sock: socket.socket, view: memoryview) -> None:
    while len(view):
        got = sock.recv_into(view)
        if got == 0:
            raise TransportError("peer closed the connection")
        view = view[got:]


class SocketTransport(Transport):
    """TCP between parties on (usually loopback) addresses; each party listens on its own.

    Party i accepts connections from parties with a higher id and connects to
    parties with a lower id.  Sends run in one thread per peer so that two
    parties sending large messages to each other never block on full buffers.
    """

    BUFFER = 4 << 20

    def __init__(
        self,
        party: int,
        addresses: Sequence[tuple[str, int]],
        connect_timeout: float = 30.0,
        io_timeout: float = 300.0,
    ) -> None:
        super().__init__(party, len(addresses))
        self._sockets: dict[int, socket.socket] = {}
        self._io_timeout = io_timeout
        self._connect(addresses, connect_timeout)
        self._outboxes: dict[int, queue.Queue[tuple[bytes, Message] | None]] = {}
        self._sent: dict[int, queue.Queue[BaseException | None]] = {}
        self._threads: list[threading.Thread] = []
        for peer, sock in self._sockets.items():
            sock.settimeout(io_timeout)
            outbox: queue.Queue[tuple[bytes, Message] | None] = queue.Queue()
            done: queue.Queue[BaseException | None] = queue.Queue()
            thread = threading.Thread(
                target=self._send_loop, args=(sock, outbox, done), daemon=True
            )
            thread.start()
            self._outboxes[peer], self._sent[peer] = outbox, done
            self._threads.append(thread)

    def _connect(self, addresses: Sequence[tuple[str, int]], timeout: float) -> None:
        host, port = addresses[self.party]
        listener = socket.create_server((host, port), reuse_port=False)
        listener.settimeout(timeout)
        try:
            deadline = time.monotonic() + timeout
            for peer in range(self.party):
                self._sockets[peer] = self._dial(peer, addresses[peer], deadline)
            for _ in range(self.party + 1, self.parties):
                conn, _ = listener.accept()
                self._tune(conn)
                peer_id = struct.unpack("<I", self._read(conn, 4))[0]
                if peer_id <= self.party or peer_id >= self.parties or peer_id in self._sockets:
                    conn.close()
                    raise TransportError(f"unexpected hello from party {peer_id}")
                self._sockets[peer_id] = conn
        except OSError as error:
            raise TransportError(f"party {self.party} could not connect: {error}") from error
        finally:
            listener.close()

    def _dial(self, peer: int, address: tuple[str, int], deadline: float) -> socket.socket:
        while True:
            try:
                sock = socket.create_connection(address, timeout=5.0)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise TransportError(f"party {peer} at {address} is unreachable") from None
                time.sleep(0.02)
        self._tune(sock)
        sock.sendall(struct.pack("<I", self.party))
        return sock

    def _tune(self, sock: socket.socket) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.BUFFER)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.BUFFER)

    @staticmethod
    def _read(sock: socket.socket, count: int) -> bytes:
        buffer = bytearray(count)
        _recv_exact(sock, memoryview(buffer))
        return bytes(buffer)

    @staticmethod
    def _send_loop(
        sock: socket.socket,
        outbox: queue.Queue[tuple[bytes, Message] | None],
        done: queue.Queue[BaseException | None],
    ) -> None:
        while (item := outbox.get()) is not None:
            header, arrays = item
            try:
                sock.sendall(_LENGTH.pack(len(header)) + header)
                for array in arrays:
                    contiguous = np.ascontiguousarray(array)
                    if contiguous.nbytes:
                        sock.sendall(contiguous.data.cast("B"))
                done.put(None)
            except BaseException as error:  # reported to the protocol thread
                done.put(error)

    def _exchange(
        self, outgoing: Mapping[int, Message], expect: list[int]
    ) -> dict[int, list[NDArray[np.generic]]]:
        for peer, arrays in outgoing.items():
            self._outboxes[peer].put((_encode_header(self.rounds, arrays), arrays))
        received = {peer: self._receive(peer) for peer in expect}
        for peer in outgoing:
            error = self._sent[peer].get(timeout=self._io_timeout)
            if error is not None:
                raise TransportError(f"sending to party {peer} failed: {error}") from error
        return received

    def _receive(self, peer: int) -> list[NDArray[np.generic]]:
        sock = self._sockets[peer]
        try:
            (length,) = _LENGTH.unpack(self._read(sock, 8))
            header = memoryview(self._read(sock, length))
            round_number, count = struct.unpack_from("<QI", header)
            if round_number != self.rounds:
                raise TransportError(
                    f"party {peer} is in round {round_number}, this party in {self.rounds}"
                )
            offset, arrays = 12, []
            for _ in range(count):
                code, ndim = _ARRAY_HEAD.unpack_from(header, offset)
                offset += _ARRAY_HEAD.size
                shape = struct.unpack_from(f"<{ndim}Q", header, offset)
                offset += 8 * ndim
                array = np.empty(shape, dtype=np.dtype(code.rstrip(b"\0").decode()))
                if array.nbytes:
                    _recv_exact(sock, array.data.cast("B"))
                arrays.append(array)
            return arrays
        except (OSError, struct.error) as error:
            raise TransportError(f"receiving from party {peer} failed: {error}") from error

    def close(self) -> None:
        for outbox in self._outboxes.values():
            outbox.put(None)
        for sock in self._sockets.values():
            with contextlib.suppress(OSError):
                sock.close()
