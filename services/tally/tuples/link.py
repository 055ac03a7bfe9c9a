"""TupleLink plumbing: the engine's ``Transport`` over gRPC, and the peers' stubs.

Channels use mutual TLS when the party has certificates (:mod:`tally.common.tls`):
the stub for party ``i`` accepts only a server certificate named ``party-<i>``, the
dealer's only one named as configured, whatever address was dialled.

``GrpcTransport`` carries one generation session's rounds: sending is a
unary ``Deliver`` call per peer; the receiving service drops the envelope
into a ``Mailboxes`` queue keyed by (session, sender), where the receiving
protocol thread picks it up and checks the round number.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Mapping, Sequence

import grpc
import numpy as np
from numpy.typing import NDArray

from tally._generated import tuples_pb2, tuples_pb2_grpc
from tally.common.tls import PeerTLS, channel, party_name
from tally.mpc.transport import Message, Transport, TransportError

MAX_MESSAGE = 1 << 30
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE),
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    # A restarted peer is reachable again within a second, not after minutes of backoff.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


CLOSED = tuples_pb2.TupleEnvelope(session="", sender=0, round=0)
"""Sentinel put in a closed session's mailboxes."""


class Mailboxes:
    """Envelopes that arrived for this party, by (session, sender)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._boxes: dict[tuple[str, int], queue.Queue[tuples_pb2.TupleEnvelope]] = {}
        self.closed: set[str] = set()

    def box(self, session: str, sender: int) -> queue.Queue[tuples_pb2.TupleEnvelope]:
        with self._lock:
            return self._boxes.setdefault((session, sender), queue.Queue())

    def put(self, envelope: tuples_pb2.TupleEnvelope) -> None:
        if envelope.session in self.closed:
            return
        self.box(envelope.session, envelope.sender).put(envelope)

    def discard(self, session: str) -> None:
        """Forget a finished session's boxes (a late envelope makes a new, unread one)."""
        with self._lock:
            for key in [key for key in self._boxes if key[0] == session]:
                del self._boxes[key]

    def close(self, session: str, parties: int = 3) -> None:
        """Abandon a session: every waiting and future receive of it fails at once."""
        with self._lock:
            self.closed.add(session)
        for sender in range(parties):
            self.box(session, sender).put(CLOSED)


def encode(
    session: str, sender: int, round_number: int, arrays: Message
) -> tuples_pb2.TupleEnvelope:
    headers, payload = [], []
    for array in arrays:
        contiguous = np.ascontiguousarray(array)
        headers.append(tuples_pb2.TupleArray(dtype=contiguous.dtype.str, shape=contiguous.shape))
        payload.append(contiguous.tobytes())
    return tuples_pb2.TupleEnvelope(
        session=session, sender=sender, round=round_number, arrays=headers, data=b"".join(payload)
    )


WIRE_DTYPES = frozenset({"<u8", "<i8", "<u4", "<i4", "<u2", "|u1", "|i1", "|b1", "<f8"})
"""The array types a TupleLink message may carry (never object or structured dtypes)."""


def decode(envelope: tuples_pb2.TupleEnvelope) -> list[NDArray[np.generic]]:
    """The arrays of one message; ``TransportError`` for anything malformed (an unknown
    dtype, a negative or oversized shape, sizes that do not add up to the data)."""
    arrays, offset = [], 0
    data = envelope.data
    for header in envelope.arrays:
        if header.dtype not in WIRE_DTYPES or len(header.shape) > 4:
            raise TransportError(f"party {envelope.sender} sent a malformed message (array type)")
        dtype = np.dtype(header.dtype)
        shape = tuple(int(s) for s in header.shape)
        count = 1
        for extent in shape:
            count *= extent
            if extent < 0 or count * dtype.itemsize > len(data):
                raise TransportError(f"party {envelope.sender} sent a malformed message (shape)")
        size = count * dtype.itemsize
        if offset + size > len(data):
            raise TransportError(f"party {envelope.sender} sent a truncated message")
        arrays.append(np.frombuffer(data, dtype=dtype, count=count, offset=offset).reshape(shape))
        offset += size
    if offset != len(data):
        raise TransportError(f"party {envelope.sender} sent a message with trailing bytes")
    return arrays


class GrpcTransport(Transport):
    """One session's rounds between the tuple-services, over ``TupleLink.Deliver``."""

    def __init__(
        self,
        party: int,
        stubs: Mapping[int, tuples_pb2_grpc.TupleLinkStub],
        mailboxes: Mailboxes,
        session: str,
        timeout: float = 120.0,
    ) -> None:
        super().__init__(party, len(stubs) + 1)
        self._stubs = stubs
        self._mailboxes = mailboxes
        self.session = session
        self._timeout = timeout

    def _exchange(
        self, outgoing: Mapping[int, Message], expect: list[int]
    ) -> dict[int, list[NDArray[np.generic]]]:
        round_number = self.rounds
        for peer, arrays in outgoing.items():
            try:
                self._stubs[peer].Deliver(
                    encode(self.session, self.party, round_number, arrays), timeout=self._timeout
                )
            except grpc.RpcError as error:
                raise TransportError(
                    f"sending to party {peer} failed: {error.details()}"
                ) from error
        return {peer: self._receive(peer, round_number) for peer in expect}

    def _receive(self, peer: int, round_number: int) -> list[NDArray[np.generic]]:
        try:
            envelope = self._mailboxes.box(self.session, peer).get(timeout=self._timeout)
        except queue.Empty:
            raise TransportError(f"party {peer} sent nothing for {self._timeout} s") from None
        if envelope is CLOSED:
            self._mailboxes.box(self.session, peer).put(CLOSED)  # for any later receive
            raise TransportError(f"session {self.session} was closed by the leader")
        if envelope.round != round_number:
            raise TransportError(
                f"party {peer} is in round {envelope.round}, this party in {round_number}"
            )
        return decode(envelope)


def connect(
    peers: Sequence[str], party: int, tls: PeerTLS | None = None
) -> dict[int, tuples_pb2_grpc.TupleLinkStub]:
    """A stub for every other party's TupleLink (TLS: each must present its party's name)."""
    return {
        index: tuples_pb2_grpc.TupleLinkStub(
            channel(address, tls, party_name(index), CHANNEL_OPTIONS)
        )
        for index, address in enumerate(peers)
        if index != party
    }


def connect_dealer(
    address: str, name: str, tls: PeerTLS | None = None
) -> tuples_pb2_grpc.TupleDealerStub:
    """A stub for the dealer process (TLS: it must present the certificate name ``name``)."""
    return tuples_pb2_grpc.TupleDealerStub(channel(address, tls, name, CHANNEL_OPTIONS))
