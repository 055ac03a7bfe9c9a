"""The dealer process: three tuple-services and ``python -m tally.tuples.dealer`` on loopback."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from tally._generated import tuples_pb2, tuples_pb2_grpc
from tally.common.prf import AesCtrPrf
from tally.common.tls import PeerTLS, channel, party_name
from tally.mpc.offline.wire import decode_shuffle, encode_shuffle
from tally.mpc.tuples import ShuffleShare
from tally.tuples.generation import dealer_shuffle
from tests.tuples.cluster import Cluster
from tests.tuples.conftest import DEALT_CHUNK
from tests.tuples.relations import EVERY_KIND, check_every_kind, sources


def reserve(cluster: Cluster, job: str, tuples: dict[str, int]) -> str:
    body = {"job_id": job, "tuples": tuples, "generate_missing": True}
    response = cluster.post(0, "/v1/reservations", body)
    assert response.status_code == 201, response.text
    reservation_id: str = response.json()["reservation_id"]
    return reservation_id


def tls_of(cluster: Cluster, name: str) -> PeerTLS:
    return PeerTLS.load(*cluster.pki[name])


def dealer_stub(cluster: Cluster, as_name: str) -> tuples_pb2_grpc.TupleDealerStub:
    address = f"127.0.0.1:{cluster.dealer_port}"
    return tuples_pb2_grpc.TupleDealerStub(channel(address, tls_of(cluster, as_name), "dealer"))


def test_dealt_tuples_of_every_kind_satisfy_their_relations(dealt: Cluster) -> None:
    check_every_kind(sources(dealt, reserve(dealt, "dealt-every-kind", EVERY_KIND)))


def test_dealt_chunks_are_the_same_at_every_party_and_each_holds_only_its_share(
    dealt: Cluster,
) -> None:
    reservation_id = reserve(dealt, "dealt-same", {"triples": 2 * DEALT_CHUNK})
    views = [dealt.get(p, f"/v1/reservations/{reservation_id}").json() for p in range(3)]
    assert views[0]["state"] == "active" and views[0] == views[1] == views[2]
    readers = sources(dealt, reservation_id)
    shares = [reader.triples(100) for reader in readers]
    # No party holds the tuple itself: every share differs from the reconstructed values.
    a = sum((s[0] for s in shares), start=np.zeros(100, dtype=np.uint64))
    assert all(not np.array_equal(s[0], a) for s in shares)
    stats = [{p["kind"]: p for p in dealt.get(i, "/v1/pools").json()} for i in range(3)]
    assert all(s["triples"]["generated"] >= 2 * DEALT_CHUNK for s in stats)


def test_a_party_gets_only_its_own_shuffle_share_from_the_dealer(dealt: Cluster) -> None:
    stub = dealer_stub(dealt, party_name(1))
    nonce = "dealer-" + "ab" * 16
    request = tuples_pb2.ShuffleRequest(
        party=1, reservation_id="r", index=0, rows=8, kinds="a", nonce=nonce
    )
    reply = stub.Shuffle(request, timeout=10)
    assert reply.ok
    share = decode_shuffle(reply.correlation)
    assert len(share) == 3  # one step per permuter, party 1's view of each
    with pytest.raises(grpc.RpcError) as refused:
        stub.Shuffle(
            tuples_pb2.ShuffleRequest(
                party=2, reservation_id="r", index=0, rows=8, kinds="a", nonce=nonce
            ),
            timeout=10,
        )
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_dealer_shuffles_are_bound_to_the_reservations_nonce(dealt: Cluster) -> None:
    stub = dealer_stub(dealt, party_name(1))

    def correlation(nonce: str) -> tuples_pb2.ShuffleReply:
        request = tuples_pb2.ShuffleRequest(
            party=1, reservation_id="same-id", index=0, rows=64, kinds="a", nonce=nonce
        )
        return stub.Shuffle(request, timeout=10)

    first, again = correlation("dealer-" + "01" * 16), correlation("dealer-" + "01" * 16)
    other = correlation("dealer-" + "02" * 16)
    assert first.ok and again.ok and other.ok
    assert first.correlation == again.correlation
    # before, the correlation came from the reservation id alone: an id derived from a
    # reused job id repeated the permutation (regression)
    assert first.correlation != other.correlation
    bare = correlation("")
    assert not bare.ok and "nonce" in bare.detail
    ids = [reserve(dealt, f"nonce-{n}", {"shuffle": 1}) for n in range(2)]
    sessions = {dealt.get(0, f"/v1/reservations/{i}").json().get("session") for i in ids}
    assert len(sessions) == 2 and all(str(s).startswith("dealer-") for s in sessions), sessions


def test_only_the_leader_asks_the_dealer_to_deal(dealt: Cluster) -> None:
    request = tuples_pb2.DealRequest(kind="triples", chunk_ids=[10**9], chunk_size=8)
    with pytest.raises(grpc.RpcError) as refused:
        dealer_stub(dealt, party_name(2)).Deal(request, timeout=10)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_parties_accept_chunks_from_the_dealer_only(dealt: Cluster) -> None:
    push = tuples_pb2.ChunkPush(kind="triples", chunk_id=10**9, count=1, data=bytes(24))
    address = f"127.0.0.1:{dealt.grpc_ports[2]}"
    stub = tuples_pb2_grpc.TupleLinkStub(
        channel(address, tls_of(dealt, party_name(0)), party_name(2))
    )
    with pytest.raises(grpc.RpcError) as refused:
        stub.StoreChunk(push, timeout=10)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_dealer_shuffles_are_the_same_for_one_label_and_fresh_for_another() -> None:
    prf, key = AesCtrPrf(), bytes(range(16))
    first = encode_all(dealer_shuffle(prf, key, b"r/shuffle/0", 3, 50, "ax"))
    assert encode_all(dealer_shuffle(prf, key, b"r/shuffle/0", 3, 50, "ax")) == first
    assert encode_all(dealer_shuffle(prf, key, b"r/shuffle/1", 3, 50, "ax")) != first
    assert encode_all(dealer_shuffle(prf, key, b"r/shuffle/0", 3, 50, "xa")) != first


def encode_all(shares: list[ShuffleShare]) -> list[bytes]:
    return [encode_shuffle(share) for share in shares]
