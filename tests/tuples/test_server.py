"""TupleLink's mutual TLS: only the consortium's named parties (and the dealer) get through."""

from __future__ import annotations

import logging
from pathlib import Path

import grpc
import pytest

from tally._generated import tuples_pb2, tuples_pb2_grpc
from tally.common.settings import ConfigurationError
from tally.common.tls import PeerTLS, channel, party_name, write_test_pki
from tally.tuples.__main__ import load_tls
from tally.tuples.settings import TuplesSettings
from tests.tuples.cluster import Cluster

PEERS = ["127.0.0.1:7101", "127.0.0.1:7102", "127.0.0.1:7103"]


def stub_to(
    cluster: Cluster, party: int, tls: PeerTLS | None, expect: str = ""
) -> tuples_pb2_grpc.TupleLinkStub:
    address = f"127.0.0.1:{cluster.grpc_ports[party]}"
    return tuples_pb2_grpc.TupleLinkStub(channel(address, tls, expect or party_name(party)))


def status_of(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as failed:
        call()  # type: ignore[operator]
    code: grpc.StatusCode = failed.value.code()
    return code


def test_a_certificate_from_another_ca_cannot_connect(dealt: Cluster, tmp_path: Path) -> None:
    foreign = PeerTLS.load(*write_test_pki(tmp_path, [party_name(0)])[party_name(0)])
    stub = stub_to(dealt, 1, foreign)
    discard = tuples_pb2.DiscardRequest(chunk_ids=[10**9])
    assert status_of(lambda: stub.Discard(discard, timeout=5)) == grpc.StatusCode.UNAVAILABLE
    plaintext = stub_to(dealt, 1, None)
    assert status_of(lambda: plaintext.Discard(discard, timeout=5)) == grpc.StatusCode.UNAVAILABLE


def test_a_server_must_present_the_party_it_was_dialled_as(dealt: Cluster) -> None:
    leader = PeerTLS.load(*dealt.pki[party_name(0)])
    wrong = stub_to(dealt, 2, leader, expect=party_name(1))  # party 2 answers, not party 1
    discard = tuples_pb2.DiscardRequest(chunk_ids=[10**9])
    assert status_of(lambda: wrong.Discard(discard, timeout=5)) == grpc.StatusCode.UNAVAILABLE
    assert stub_to(dealt, 2, leader).Discard(discard, timeout=5).ok  # the leader may discard


def test_followers_and_the_dealer_may_not_make_the_leaders_calls(dealt: Cluster) -> None:
    reserve = tuples_pb2.ReserveRequest(reservation_id="f" * 32, job_id="forged", session="s")
    for name in (party_name(2), "dealer"):
        stub = stub_to(dealt, 1, PeerTLS.load(*dealt.pki[name]))
        denied = status_of(lambda stub=stub: stub.Reserve(reserve, timeout=5))
        assert denied == grpc.StatusCode.PERMISSION_DENIED


def test_a_party_cannot_send_rounds_in_another_partys_name(dealt: Cluster) -> None:
    stub = stub_to(dealt, 1, PeerTLS.load(*dealt.pki[party_name(2)]))
    forged = tuples_pb2.TupleEnvelope(session="s", sender=0, round=0)
    assert status_of(lambda: stub.Deliver(forged, timeout=5)) == grpc.StatusCode.PERMISSION_DENIED


def test_plaintext_is_development_only_and_warned(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert load_tls(TuplesSettings(peers=PEERS)) is None
    assert "WITHOUT TLS" in caplog.text
    with pytest.raises(ValueError, match="production mode needs mutual TLS"):
        TuplesSettings(env="production", peers=PEERS)


def test_a_party_refuses_to_start_with_another_partys_certificate(tmp_path: Path) -> None:
    ca, cert, key = write_test_pki(tmp_path, [party_name(1)])[party_name(1)]
    settings = TuplesSettings(peers=PEERS, party=0, tls_ca=ca, tls_cert=cert, tls_key=key)
    with pytest.raises(ConfigurationError, match="expected 'party-0'"):
        load_tls(settings)
