"""PartyControl: what the execution services of the parties ask each other (gRPC, mutual TLS).

* ``Propose``: which spec hash (if any) this party accepted for a job id; a job
  starts only when every party accepted the same hash.
* ``Locate``: the PartyLink address of this party's worker k of a job.
* ``Abandon``: a job failed or was cancelled at another party: stop it here too.

Every call names its sender; with TLS the sender must be the party its client
certificate names.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import grpc

from tally._generated import partylink_pb2 as pb
from tally._generated import partylink_pb2_grpc as pb_grpc
from tally.common.consortium import PeerDirectory
from tally.execution.tls import PartyTLS, party_name, peer_party

MAX_FRAME = 17 << 20
"""Largest gRPC message either side accepts."""
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
    ("grpc.http2.max_ping_strikes", 0),
    ("grpc.so_reuseport", 0),
]


def secure_channel(address: str, tls: PartyTLS | None, peer: int) -> grpc.aio.Channel:
    """An aio channel to ``peer``; with TLS the server must present ``party-<peer>``."""
    if tls is None:
        return grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
    options = [*CHANNEL_OPTIONS, ("grpc.ssl_target_name_override", party_name(peer))]
    return grpc.aio.secure_channel(address, tls.channel_credentials(), options=options)


class ControlHandler(Protocol):
    """What the service answers to its peers."""

    def proposal(self, job_id: str) -> tuple[bool, str, str, str]:
        """(known, spec hash, phase, reason) of a job here."""
        ...

    def locate(self, job_id: str, worker: int) -> tuple[str, str]:
        """(worker address or "", phase) of a job's worker here."""
        ...

    def abandon(self, job_id: str, sender: int, phase: str, reason: str) -> bool:
        """Stop a job because a peer failed or cancelled it; False if unknown here."""
        ...


class _Servicer(pb_grpc.PartyControlServicer):
    def __init__(self, handler: ControlHandler, tls: PartyTLS | None, parties: int) -> None:
        self.handler = handler
        self.tls = tls
        self.parties = parties

    async def _check_sender(self, sender: int, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        if not 0 <= sender < self.parties:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"no party {sender}")
        if self.tls is not None and peer_party(context) != sender:
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"the client certificate does not name {party_name(sender)}",
            )

    async def Propose(  # noqa: N802 - gRPC method name
        self, request: pb.Proposal, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ProposalReply:
        await self._check_sender(request.sender, context)
        known, digest, phase, reason = self.handler.proposal(request.job_id)
        return pb.ProposalReply(known=known, spec_hash=digest, phase=phase, reason=reason)

    async def Locate(  # noqa: N802
        self, request: pb.LocateRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.LocateReply:
        await self._check_sender(request.sender, context)
        address, phase = self.handler.locate(request.job_id, request.worker)
        return pb.LocateReply(address=address, phase=phase)

    async def Abandon(  # noqa: N802
        self, request: pb.AbandonRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.AbandonReply:
        await self._check_sender(request.sender, context)
        known = self.handler.abandon(request.job_id, request.sender, request.phase, request.reason)
        return pb.AbandonReply(known=known)


async def start_control_server(
    handler: ControlHandler, tls: PartyTLS | None, parties: int, bind: str
) -> tuple[grpc.aio.Server, int]:
    """Start the PartyControl server on ``bind`` (host:port); returns it and its port."""
    server = grpc.aio.server(options=SERVER_OPTIONS)
    pb_grpc.add_PartyControlServicer_to_server(_Servicer(handler, tls, parties), server)
    if tls is None:
        port = server.add_insecure_port(bind)
    else:
        port = server.add_secure_port(bind, tls.server_credentials())
    if port == 0:
        raise OSError(f"cannot listen for PartyControl on {bind}")
    await server.start()
    return server, port


@dataclass
class ControlClient:
    """Calls to every peer's PartyControl (channels created lazily on the running loop).

    ``peers`` is every party's public endpoint by index: a list, or a
    :class:`~tally.common.consortium.PeerDirectory` that follows the consortium
    document, in which case a peer whose endpoint changed is dialled at its new address.
    """

    party: int
    peers: PeerDirectory | Sequence[str]
    tls: PartyTLS | None
    timeout: float = 5.0

    def __post_init__(self) -> None:
        if not isinstance(self.peers, PeerDirectory):
            self.peers = PeerDirectory(self.peers)
        self._stubs: dict[int, tuple[str, pb_grpc.PartyControlStub]] = {}
        self._channels: list[grpc.aio.Channel] = []

    def endpoint(self, peer: int) -> str:
        """The public endpoint of party ``peer`` as the consortium says now."""
        assert isinstance(self.peers, PeerDirectory)
        return self.peers.current()[peer]

    def _stub(self, peer: int) -> pb_grpc.PartyControlStub:
        address = self.endpoint(peer)
        cached = self._stubs.get(peer)
        if cached is None or cached[0] != address:
            channel = secure_channel(address, self.tls, peer)
            self._channels.append(channel)
            self._stubs[peer] = (address, pb_grpc.PartyControlStub(channel))
        return self._stubs[peer][1]

    async def propose(self, peer: int, job_id: str, digest: str) -> pb.ProposalReply:
        request = pb.Proposal(job_id=job_id, sender=self.party, spec_hash=digest)
        reply: pb.ProposalReply = await self._stub(peer).Propose(request, timeout=self.timeout)
        return reply

    async def locate(self, peer: int, job_id: str, worker: int) -> pb.LocateReply:
        request = pb.LocateRequest(job_id=job_id, worker=worker, sender=self.party)
        reply: pb.LocateReply = await self._stub(peer).Locate(request, timeout=self.timeout)
        return reply

    async def abandon(self, peer: int, job_id: str, phase: str, reason: str) -> bool:
        request = pb.AbandonRequest(job_id=job_id, sender=self.party, phase=phase, reason=reason)
        reply: pb.AbandonReply = await self._stub(peer).Abandon(request, timeout=self.timeout)
        return reply.known

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()
        self._stubs.clear()
        self._channels.clear()
