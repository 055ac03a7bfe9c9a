"""The party's one public endpoint: TLS passthrough routed by the server name (SNI).

Peers in other clusters cannot reach a worker's pod address (pod networks are
private to each cluster and often overlap), so everything one party's execution
service and workers receive from the other parties arrives on one listener, the
address peers know the party by (``PEERS[party]``).  The gateway reads the first
bytes of each connection without consuming them (``MSG_PEEK``), takes the server
name from the TLS ClientHello, and splices the connection, unopened, to the local
listener that name stands for:

* ``party-<i>``: this party's PartyControl gRPC server (what gRPC clients send as
  the name of the server they expect);
* ``w<k>-<route>.party-<i>``: worker ``k`` of the job whose route id is ``<route>``
  (:func:`route_name`), at the address the worker reported to this service.

TLS is never terminated here: the handshake, the certificate check that binds a
connection to a party, and every byte after it are between the two endpoints, so
the gateway adds no plaintext hop and holds no key.  Bytes are moved with
``os.splice`` through a pipe, inside the kernel, so relaying costs almost no CPU.

Development mode (no TLS) has no ClientHello: a dialler writes one line
``TALLY-ROUTE <name>`` first (consumed here), and a connection that starts with
the HTTP/2 preface is gRPC, for PartyControl.

What it reveals: the server name travels in clear in the ClientHello, so an
observer of the network between parties learns which connections belong to the
same worker of the same job (the route id is a hash of the job id; it names no
dataset or party beyond the one the address already names).  A connection whose
name routes nowhere is closed without an answer.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable

from tally.common.tls import party_name

log = logging.getLogger(__name__)

PEEK_TIMEOUT_S = 10.0
"""How long a new connection may take to send its ClientHello (or route line)."""
MAX_HELLO = 16 * 1024 + 5
"""A ClientHello larger than one TLS record is refused."""
PIPE_BYTES = 1 << 20
ROUTE_PREFIX = b"TALLY-ROUTE "
HTTP2_PREFACE = b"PRI * HTTP/2.0"
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)

MAX_ROUTING = 64
"""Connections that may be sending their hello at once; more are closed at once (each
holds a thread for up to PEEK_TIMEOUT_S before it has said who it is)."""

Resolver = Callable[[str], tuple[str, int] | None]
"""A server name → the local (host, port) it stands for, or None to refuse."""


def host_port(address: str) -> tuple[str, int]:
    """``host:port`` (or ``[v6]:port``) as a (host, port) pair for ``socket``."""
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def accept_loop(
    listener: socket.socket, stopped: threading.Event, handle: Callable[[socket.socket], None]
) -> None:
    """Accept until ``stopped`` (``listener`` has a short timeout) and hand each connection
    to ``handle`` in a thread of its own."""
    while not stopped.is_set():
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            continue
        except OSError:
            if stopped.is_set():
                return
            time.sleep(0.05)  # e.g. out of file descriptors: do not spin
            continue
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


def route_id(job_id: str) -> str:
    """The opaque id a job's worker connections are routed by (a hash of the job id)."""
    return hashlib.sha256(job_id.encode()).hexdigest()[:24]


def route_name(job_id: str, worker: int, party: int) -> str:
    """The server name a peer dials to reach worker ``worker`` of ``job_id`` at ``party``."""
    return f"w{worker}-{route_id(job_id)}.{party_name(party)}"


def parse_route(name: str, party: int) -> tuple[int, str] | None:
    """(worker, route id) of a worker's server name at ``party``; None for any other name."""
    head, _, tail = name.partition(".")
    if tail != party_name(party) or not head.startswith("w"):
        return None
    worker, _, route = head[1:].partition("-")
    if not worker.isascii() or not worker.isdigit() or len(route) != 24:
        return None
    return int(worker), route


def server_name(hello: bytes) -> str | None:
    """The SNI host name of a TLS ClientHello record; None if absent or malformed."""
    try:
        if len(hello) < 5 or hello[0] != 0x16:
            return None
        end = min(len(hello), 5 + int.from_bytes(hello[3:5], "big"))
        position = 5
        if hello[position] != 0x01:  # handshake type: ClientHello
            return None
        position += 4 + 2 + 32  # handshake header, client version, random
        position += 1 + hello[position]  # session id
        position += 2 + int.from_bytes(hello[position : position + 2], "big")  # cipher suites
        position += 1 + hello[position]  # compression methods
        extensions_end = position + 2 + int.from_bytes(hello[position : position + 2], "big")
        position += 2
        while position + 4 <= min(end, extensions_end):
            kind = int.from_bytes(hello[position : position + 2], "big")
            length = int.from_bytes(hello[position + 2 : position + 4], "big")
            position += 4
            if kind == 0:  # server_name: list length, then (type, length, name)
                if hello[position + 2] != 0:
                    return None
                size = int.from_bytes(hello[position + 3 : position + 5], "big")
                raw = hello[position + 5 : position + 5 + size]
                if len(raw) != size:
                    return None
                return raw.decode("ascii")
            position += length
    except (IndexError, UnicodeDecodeError):
        return None
    return None


class Gateway:
    """Accepts on the public endpoint and splices each connection to where its name routes."""

    def __init__(self, bind: tuple[str, int], resolve: Resolver) -> None:
        self._resolve = resolve
        self._listener = socket.create_server(bind, reuse_port=False, backlog=256)
        self._listener.settimeout(0.5)
        self.port: int = self._listener.getsockname()[1]
        self._closed = threading.Event()
        self._thread = threading.Thread(
            target=accept_loop,
            args=(self._listener, self._closed, self._admit),
            daemon=True,
            name="gateway",
        )
        self._routing = threading.BoundedSemaphore(MAX_ROUTING)
        self.relayed = 0
        """Connections spliced so far (tests read it)."""

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._closed.set()
        self._thread.join(timeout=5.0)
        self._listener.close()

    def _admit(self, conn: socket.socket) -> None:
        if not self._routing.acquire(blocking=False):
            log.info("gateway: %d connections are still saying hello; closed one", MAX_ROUTING)
            conn.close()
            return
        try:
            self._route(conn)
        finally:
            self._routing.release()

    def _route(self, conn: socket.socket) -> None:
        try:
            name = self._name(conn)
            target = self._resolve(name) if name is not None else None
            if target is None:
                shown = name if name is None else name[:80]  # the peer chose it: keep it short
                log.info("gateway: closed a connection whose name routes nowhere (%r)", shown)
                conn.close()
                return
            upstream = socket.create_connection(target, timeout=5.0)
        except OSError as error:
            log.info("gateway: could not route a connection: %s", error)
            conn.close()
            return
        for sock in (conn, upstream):
            sock.settimeout(None)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.relayed += 1
        done = threading.Barrier(2, action=lambda: _close(conn, upstream))
        threading.Thread(target=_pump, args=(conn, upstream, done), daemon=True).start()
        threading.Thread(target=_pump, args=(upstream, conn, done), daemon=True).start()

    @staticmethod
    def _name(conn: socket.socket) -> str | None:
        """Peek until the ClientHello (or route line, or HTTP/2 preface) is complete.

        Returns the server name, "" for plaintext gRPC, None for anything else.
        """
        conn.settimeout(PEEK_TIMEOUT_S)
        deadline = time.monotonic() + PEEK_TIMEOUT_S
        while time.monotonic() < deadline:
            head = conn.recv(MAX_HELLO, socket.MSG_PEEK)
            if not head:
                return None
            if head[:1] == b"\x16":
                if len(head) >= 5 and len(head) >= 5 + int.from_bytes(head[3:5], "big"):
                    return server_name(head)
            elif head.startswith(ROUTE_PREFIX):
                line, newline, _ = head.partition(b"\n")
                if newline:
                    conn.recv(len(line) + 1)  # consume the line: the rest is the peer's
                    return line[len(ROUTE_PREFIX) :].decode("ascii", "replace").strip()
                if len(head) > 256:
                    return None
            elif head.startswith(HTTP2_PREFACE):
                return ""  # plaintext gRPC: PartyControl (development mode)
            elif not (ROUTE_PREFIX.startswith(head) or HTTP2_PREFACE.startswith(head)):
                return None
            time.sleep(0.005)  # not all there yet
        return None


def _pump(source: socket.socket, sink: socket.socket, done: threading.Barrier) -> None:
    """Move bytes from ``source`` to ``sink`` through a pipe until ``source`` ends."""
    read_end, write_end = os.pipe()
    with contextlib.suppress(OSError):
        fcntl.fcntl(write_end, F_SETPIPE_SZ, PIPE_BYTES)
    try:
        src, dst = source.fileno(), sink.fileno()
        while True:
            moved = os.splice(src, write_end, PIPE_BYTES)
            if moved == 0:
                break
            while moved:
                moved -= os.splice(read_end, dst, moved)
    except OSError:
        pass
    finally:
        os.close(read_end)
        os.close(write_end)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)
        with contextlib.suppress(threading.BrokenBarrierError):
            done.wait(timeout=3600.0)


def _close(*socks: socket.socket) -> None:
    for sock in socks:
        with contextlib.suppress(OSError):
            sock.close()
