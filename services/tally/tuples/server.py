"""The TupleLink gRPC servicer: checks who calls, then hands the request to the ``TupleNode``.

Under mutual TLS every call carries the caller's certificate name, and each
method admits only its rightful caller: the leader's calls (sessions,
generation, reservations, releases, discards) only from ``party-0``, a
generation round (``Deliver``) only from the party it names as its sender,
and dealt chunks (``StoreChunk``) only from the configured dealer.  Anyone
else is refused with ``PERMISSION_DENIED``; a certificate from another CA
never gets past the handshake.  Plaintext (development only) cannot check
callers.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import grpc

from tally._generated import tuples_pb2, tuples_pb2_grpc
from tally.common.tls import PeerTLS, party_name, peer_name
from tally.tuples.link import CHANNEL_OPTIONS
from tally.tuples.node import TupleNode, expand
from tally.tuples.store import ReservationError, ReservationSpec

log = logging.getLogger(__name__)

LEADER = party_name(0)


def require_caller(context: grpc.ServicerContext, tls: bool, *allowed: str) -> None:
    """Abort the call unless its TLS client certificate names one of ``allowed``."""
    if not tls:
        return
    caller = peer_name(context)
    if caller not in allowed:
        context.abort(
            grpc.StatusCode.PERMISSION_DENIED,
            f"{caller or 'an unnamed caller'} may not make this call (only {', '.join(allowed)})",
        )


class TupleLinkServicer(tuples_pb2_grpc.TupleLinkServicer):
    """Peer requests: generation rounds, sessions, reservations, releases, discards, chunks."""

    def __init__(self, node: TupleNode, tls: bool = False) -> None:
        self.node = node
        self.tls = tls

    def _from_leader(self, context: grpc.ServicerContext) -> None:
        require_caller(context, self.tls, LEADER)

    def Deliver(  # noqa: N802 - gRPC method names
        self, request: tuples_pb2.TupleEnvelope, context: grpc.ServicerContext
    ) -> tuples_pb2.TupleAck:
        if request.sender == self.node.party or request.sender > len(self.node.stubs):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"no peer {request.sender}")
        require_caller(context, self.tls, party_name(request.sender))
        self.node.mailboxes.put(request)
        return tuples_pb2.TupleAck(ok=True)

    def OpenSession(  # noqa: N802
        self, request: tuples_pb2.SessionRequest, context: grpc.ServicerContext
    ) -> tuples_pb2.TupleAck:
        self._from_leader(context)
        try:
            self.node.open_session(request.session)
        except Exception as error:  # reported to the leader
            log.warning("opening session failed: %s", error)
            return tuples_pb2.TupleAck(ok=False, detail=str(error))
        return tuples_pb2.TupleAck(ok=True)

    def CloseSession(  # noqa: N802
        self, request: tuples_pb2.SessionRequest, context: grpc.ServicerContext
    ) -> tuples_pb2.TupleAck:
        self._from_leader(context)
        self.node.close_session(request.session)
        return tuples_pb2.TupleAck(ok=True)

    def Generate(  # noqa: N802
        self, request: tuples_pb2.GenerateRequest, context: grpc.ServicerContext
    ) -> tuples_pb2.GenerateReply:
        self._from_leader(context)
        try:
            seconds = self.node.generate(
                request.session, request.kind, list(request.chunk_ids), int(request.chunk_size)
            )
        except Exception as error:  # reported to the leader
            log.warning("generation failed: %s", error)
            return tuples_pb2.GenerateReply(ok=False, detail=str(error))
        return tuples_pb2.GenerateReply(ok=True, seconds=seconds)

    def Reserve(  # noqa: N802
        self, request: tuples_pb2.ReserveRequest, context: grpc.ServicerContext
    ) -> tuples_pb2.ReserveReply:
        self._from_leader(context)
        spec = ReservationSpec(
            {
                item.kind: (int(item.count), expand([(r.first, r.last) for r in item.ranges]))
                for item in request.kinds
            }
        )
        try:
            self.node.store.accept(request.reservation_id, request.job_id, request.session, spec)
        except (ReservationError, ValueError) as error:
            return tuples_pb2.ReserveReply(accepted=False, detail=str(error))
        return tuples_pb2.ReserveReply(accepted=True)

    def Release(  # noqa: N802
        self, request: tuples_pb2.ReleaseRequest, context: grpc.ServicerContext
    ) -> tuples_pb2.ReleaseReply:
        self._from_leader(context)
        store = self.node.store
        if request.phase == tuples_pb2.ReleaseRequest.PREPARE:
            return tuples_pb2.ReleaseReply(
                ok=True, consumed=store.prepare_release(request.reservation_id)
            )
        if request.phase == tuples_pb2.ReleaseRequest.APPLY:
            store.apply_release(request.reservation_id, list(request.consumed))
            return tuples_pb2.ReleaseReply(ok=True)
        return tuples_pb2.ReleaseReply(ok=False, detail="unknown release phase")

    def Discard(  # noqa: N802
        self, request: tuples_pb2.DiscardRequest, context: grpc.ServicerContext
    ) -> tuples_pb2.TupleAck:
        self._from_leader(context)
        self.node.store.discard(list(request.chunk_ids))
        return tuples_pb2.TupleAck(ok=True)

    def StoreChunk(  # noqa: N802
        self, request: tuples_pb2.ChunkPush, context: grpc.ServicerContext
    ) -> tuples_pb2.TupleAck:
        require_caller(context, self.tls, self.node.settings.dealer_name)
        try:
            self.node.store_dealt(
                request.kind, int(request.chunk_id), int(request.count), request.data
            )
        except (ReservationError, ValueError) as error:
            log.warning("a dealt chunk was refused: %s", error)
            return tuples_pb2.TupleAck(ok=False, detail=str(error))
        return tuples_pb2.TupleAck(ok=True)


def serve_link(
    node: TupleNode, address: str, tls: PeerTLS | None = None, workers: int = 32
) -> grpc.Server:
    """Start the TupleLink server on ``address`` (host:port); mutual TLS when ``tls`` is given."""
    server = grpc.server(
        ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tuplelink"),
        options=CHANNEL_OPTIONS,
    )
    tuples_pb2_grpc.add_TupleLinkServicer_to_server(
        TupleLinkServicer(node, tls is not None), server
    )
    if tls is None:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, tls.server_credentials())
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    server.start()
    return server
