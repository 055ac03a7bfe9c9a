"""The dealer process: ``python -m tally.tuples.dealer`` (settings from ``TALLY_DEALER_*``).

An independent dealer that holds no computational role (DESIGN §1, generator
``dealer``): it stores nothing, holds no party's data and runs no online protocol.

* ``Deal`` (from the leader, ``party-0``): for every chunk id the leader allocated,
  sample the tuples in full from the OS CSPRNG, split them, and push each party
  only its own shares over TupleLink (``StoreChunk``); reply once every party has
  stored every chunk, or with the first failure (the leader then discards the
  chunks everywhere).
* ``Shuffle`` (from party ``i``): party i's share of shuffle correlation ``index``
  of a reservation, derived with AES-CTR from the dealer's key
  (``TALLY_DEALER_SECRET``) and the (reservation, index, rows, kinds) label, so
  the parties, asking independently, get shares of one correlation.

Under mutual TLS the dealer's certificate carries its own name (never
``party-<i>``), it dials party i only if that party presents ``party-<i>``, and it
serves a shuffle share only to the party named on the caller's certificate.
"""

from __future__ import annotations

import hashlib
import logging
from concurrent.futures import ThreadPoolExecutor

import grpc

from tally._generated import tuples_pb2, tuples_pb2_grpc
from tally.common.prf import AesCtrPrf
from tally.common.settings import ConfigurationError
from tally.common.tls import PeerTLS, party_name
from tally.mpc.offline.layout import parse_kind
from tally.mpc.offline.prf import KEY_BYTES
from tally.mpc.offline.wire import encode_shuffle
from tally.tuples.generation import dealer_chunks, dealer_shuffle
from tally.tuples.link import CHANNEL_OPTIONS, connect
from tally.tuples.server import LEADER, require_caller
from tally.tuples.settings import DealerSettings

log = logging.getLogger("tally.tuples.dealer")

MAX_SHUFFLE_CELLS = 1 << 28
"""Largest shuffle correlation (rows x columns) served in one reply (2 GiB of shares)."""


class DealerServicer(tuples_pb2_grpc.TupleDealerServicer):
    """Deals chunks to every party and serves each party its shuffle shares."""

    def __init__(
        self,
        settings: DealerSettings,
        parties: dict[int, tuples_pb2_grpc.TupleLinkStub],
        tls: bool,
    ) -> None:
        self.settings = settings
        self.parties = parties
        self.tls = tls
        self.prf = AesCtrPrf()
        self._key = hashlib.blake2b(
            settings.secret.get_secret_value().encode(),
            digest_size=KEY_BYTES,
            person=b"tally-shuffle",
        ).digest()
        self._pushes = ThreadPoolExecutor(max_workers=len(parties), thread_name_prefix="deal")

    def Deal(  # noqa: N802 - gRPC method names
        self, request: tuples_pb2.DealRequest, context: grpc.ServicerContext
    ) -> tuples_pb2.TupleAck:
        require_caller(context, self.tls, LEADER)
        try:
            kind = parse_kind(request.kind)
        except ValueError as error:
            return tuples_pb2.TupleAck(ok=False, detail=str(error))
        size = int(request.chunk_size)
        if size <= 0:
            return tuples_pb2.TupleAck(ok=False, detail="chunk_size must be positive")
        for chunk_id in request.chunk_ids:
            shares = dealer_chunks(kind, size, len(self.parties))
            futures = {
                party: self._pushes.submit(
                    stub.StoreChunk,
                    tuples_pb2.ChunkPush(
                        kind=kind.name, chunk_id=chunk_id, count=size, data=b"".join(shares[party])
                    ),
                    timeout=self.settings.rpc_timeout_s,
                )
                for party, stub in self.parties.items()
            }
            del shares
            failures = []
            for party, future in futures.items():
                try:
                    reply = future.result()
                    if not reply.ok:
                        failures.append(f"party {party}: {reply.detail}")
                except grpc.RpcError as error:
                    failures.append(f"party {party} unreachable: {error.details()}")
            if failures:
                log.warning("dealing chunk %d failed: %s", chunk_id, "; ".join(failures))
                return tuples_pb2.TupleAck(ok=False, detail="; ".join(failures))
        return tuples_pb2.TupleAck(ok=True)

    def Shuffle(  # noqa: N802
        self, request: tuples_pb2.ShuffleRequest, context: grpc.ServicerContext
    ) -> tuples_pb2.ShuffleReply:
        party = int(request.party)
        if party not in self.parties:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"no party {party}")
        require_caller(context, self.tls, party_name(party))
        rows, kinds = int(request.rows), request.kinds
        if rows * len(kinds) > MAX_SHUFFLE_CELLS:
            return tuples_pb2.ShuffleReply(ok=False, detail="shuffle correlation too large")
        if len(request.nonce) < 16:
            return tuples_pb2.ShuffleReply(
                ok=False, detail="a shuffle needs its reservation's nonce"
            )
        label = f"{request.nonce}/{request.reservation_id}/shuffle/{request.index}".encode()
        try:
            shares = dealer_shuffle(self.prf, self._key, label, len(self.parties), rows, kinds)
        except ValueError as error:
            return tuples_pb2.ShuffleReply(ok=False, detail=str(error))
        return tuples_pb2.ShuffleReply(ok=True, correlation=encode_shuffle(shares[party]))


def load_tls(settings: DealerSettings) -> PeerTLS | None:
    """The dealer's certificate (never a party's), or None (development: plaintext, warned)."""
    if settings.tls_ca is None or settings.tls_cert is None or settings.tls_key is None:
        log.warning(
            "the dealer runs WITHOUT TLS (development mode): parties are not authenticated and "
            "tuple shares cross the network in the clear; set TALLY_DEALER_TLS_CA, _TLS_CERT "
            "and _TLS_KEY"
        )
        return None
    tls = PeerTLS.load(settings.tls_ca, settings.tls_cert, settings.tls_key, "dealer")
    if tls.name != settings.name:
        raise ConfigurationError(
            f"the dealer's certificate names {tls.name!r}, not {settings.name!r}; a party's "
            "certificate never serves as the dealer's"
        )
    return tls


def serve_dealer(settings: DealerSettings, workers: int = 8) -> grpc.Server:
    """Start the dealer's gRPC server on ``settings.listen``."""
    tls = load_tls(settings)
    parties = connect(settings.peers, -1, tls)
    server = grpc.server(
        ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dealer"),
        options=CHANNEL_OPTIONS,
    )
    servicer = DealerServicer(settings, parties, tls is not None)
    tuples_pb2_grpc.add_TupleDealerServicer_to_server(servicer, server)
    if tls is None:
        port = server.add_insecure_port(settings.listen)
    else:
        port = server.add_secure_port(settings.listen, tls.server_credentials())
    if port == 0:
        raise OSError(f"cannot listen on {settings.listen}")
    server.start()
    log.info("dealer for %d parties listening on %s", len(parties), settings.listen)
    return server


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    server = serve_dealer(DealerSettings())
    try:
        server.wait_for_termination()
    finally:
        server.stop(grace=1.0)


if __name__ == "__main__":
    main()
