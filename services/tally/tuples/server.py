"""The TupleLink gRPC servicer: hands each peer request to the party's ``TupleNode``."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import grpc

from tally._generated import tuples_pb2, tuples_pb2_grpc
from tally.tuples.link import CHANNEL_OPTIONS
from tally.tuples.node import TupleNode, expand
from tally.tuples.store import ReservationError, ReservationSpec

log = logging.getLogger(__name__)


class TupleLinkServicer(tuples_pb2_grpc.TupleLinkServicer):
    """Peer requests: generation rounds, sessions, reservations, releases, discards."""

    def __init__(self, node: TupleNode) -> None:
        self.node = node

    def Deliver(  # noqa: N802 - gRPC method names
        self, request: tuples_pb2.TupleEnvelope, context: grpc.ServicerContext
    ) -> tuples_pb2.TupleAck:
        self.node.mailboxes.put(request)
        return tuples_pb2.TupleAck(ok=True)

    def OpenSession(  # noqa: N802
        self, request: tuples_pb2.SessionRequest, context: grpc.ServicerContext
    ) -> tuples_pb2.TupleAck:
        try:
            self.node.open_session(request.session)
        except Exception as error:  # reported to the leader
            log.warning("opening session failed: %s", error)
            return tuples_pb2.TupleAck(ok=False, detail=str(error))
        return tuples_pb2.TupleAck(ok=True)

    def CloseSession(  # noqa: N802
        self, request: tuples_pb2.SessionRequest, context: grpc.ServicerContext
    ) -> tuples_pb2.TupleAck:
        self.node.close_session(request.session)
        return tuples_pb2.TupleAck(ok=True)

    def Generate(  # noqa: N802
        self, request: tuples_pb2.GenerateRequest, context: grpc.ServicerContext
    ) -> tuples_pb2.GenerateReply:
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
        self.node.store.discard(list(request.chunk_ids))
        return tuples_pb2.TupleAck(ok=True)


def serve_link(node: TupleNode, address: str, workers: int = 32) -> grpc.Server:
    """Start the TupleLink server on ``address`` (host:port)."""
    server = grpc.server(
        ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tuplelink"),
        options=CHANNEL_OPTIONS,
    )
    tuples_pb2_grpc.add_TupleLinkServicer_to_server(TupleLinkServicer(node), server)
    if server.add_insecure_port(address) == 0:
        raise OSError(f"cannot listen on {address}")
    server.start()
    return server
