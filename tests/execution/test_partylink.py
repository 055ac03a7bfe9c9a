"""PartyLink: frames, meshes over TLS through each party's gateway, and peers out of protocol.

Workers of one job build a mesh (with the consortium's certificates, through a
:class:`~tally.execution.gateway.Gateway` per party, as deployed); then one of them
writes hand-made frames on its link, as a faulty or hostile peer could.
"""

from __future__ import annotations

import hashlib
import socket
import ssl
import threading
import time
from typing import Any

import numpy as np
import pytest

from tally._generated import partylink_pb2 as pb
from tally.execution.gateway import Gateway, parse_route, route_id, route_name, server_name
from tally.execution.partylink import (
    HEAD,
    MAGIC,
    LinkIdentity,
    PartyLinkEndpoint,
    PartyLinkTransport,
    PeerLost,
    ProtocolViolation,
    allocate,
    encode_head,
    parse_fields,
    parse_head,
)
from tally.execution.tls import PartyTLS, write_test_pki

JOB = "job-frames"


def test_a_frame_head_round_trips_and_bounds_are_refused() -> None:
    frame = pb.Frame(kind=pb.Frame.DATA, job_id=JOB, sender=1, round=9)
    raw = encode_head(frame, 24)
    fields, data = parse_head(raw[: HEAD.size])
    assert data == 24 and parse_fields(raw[HEAD.size : HEAD.size + fields]) == frame
    with pytest.raises(ProtocolViolation, match="not a PartyLink frame"):
        parse_head(b"HTTP" + raw[4 : HEAD.size])
    with pytest.raises(ProtocolViolation, match="fields over the size limit"):
        parse_head(HEAD.pack(MAGIC, 1 << 30, 0))
    with pytest.raises(ProtocolViolation, match="exceeds the size limit"):
        parse_head(HEAD.pack(MAGIC, 10, 1 << 40))
    with pytest.raises(ProtocolViolation, match="malformed"):
        parse_fields(b"\x0f\x00")
    with pytest.raises(ProtocolViolation, match="data inside"):
        parse_fields(pb.Frame(data=b"x").SerializeToString())


@pytest.mark.parametrize(
    ("headers", "data", "message"),
    [
        ([("<u8", [2])], 8, "declare more bytes"),
        ([("<u8", [1])], 16, "more bytes than its array headers"),
        ([("|O", [1])], 8, "dtype object"),
        ([("not-a-dtype", [1])], 8, "unknown dtype"),
    ],
)
def test_array_headers_must_add_up_to_the_data(
    headers: list[tuple[str, list[int]]], data: int, message: str
) -> None:
    frame = pb.Frame(arrays=[pb.ArrayHeader(dtype=d, shape=s) for d, s in headers])
    with pytest.raises(ProtocolViolation, match=message):
        allocate(frame, data)


def test_the_gateway_reads_the_server_name_of_a_real_client_hello() -> None:
    context = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    name = route_name("job-1", 3, 2)
    client = context.wrap_bio(incoming, outgoing, server_hostname=name)
    with pytest.raises(ssl.SSLWantReadError):
        client.do_handshake()
    hello = outgoing.read()
    assert server_name(hello) == name
    route = hashlib.sha256(b"job-1").hexdigest()[:24]  # docs/execution.md: 24 hex of SHA-256
    assert name == f"w3-{route}.party-2" and route_id("job-1") == route
    assert parse_route(name, 2) == (3, route)
    assert parse_route(name, 1) is None  # another party's name routes nowhere here
    assert parse_route("w3-short.party-2", 2) is None
    assert server_name(hello[:40]) is None
    assert server_name(b"GET / HTTP/1.1\r\n") is None


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> list[PartyTLS]:
    paths = write_test_pki(tmp_path_factory.mktemp("pki"), 3)
    return [PartyTLS.load(*paths[party]) for party in range(3)]


def _mesh(
    parties: int, tls: list[PartyTLS] | None, via_gateway: bool
) -> tuple[list[PartyLinkEndpoint], list[PartyLinkTransport], list[Gateway]]:
    addresses: dict[int, str] = {}
    gateways: list[Gateway] = []
    if via_gateway:
        for party in range(parties):

            def resolve(name: str, party: int = party) -> tuple[str, int] | None:
                route = parse_route(name, party)
                if route is None or party not in addresses:
                    return None
                host, _, port = addresses[party].rpartition(":")
                return host, int(port)

            gateway = Gateway(("127.0.0.1", 0), resolve)
            gateway.start()
            gateways.append(gateway)

    def locator(party: int) -> Any:
        async def locate(peer: int) -> str | None:
            if peer not in addresses:
                return None
            return f"127.0.0.1:{gateways[peer].port}" if via_gateway else addresses[peer]

        return locate

    endpoints = [
        PartyLinkEndpoint(
            LinkIdentity(JOB, 0, party, parties),
            tls[party] if tls else None,
            locator(party),
            io_timeout=10.0,
        )
        for party in range(parties)
    ]
    for party, endpoint in enumerate(endpoints):
        addresses[party] = endpoint.start()
    meshes: list[Any] = [None] * parties

    def connect(party: int) -> None:
        meshes[party] = endpoints[party].connect(pb.Hello(spec_hash="same"), 30.0)[0]

    threads = [threading.Thread(target=connect, args=(party,)) for party in range(parties)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return endpoints, meshes, gateways


def _close(endpoints: list[PartyLinkEndpoint], meshes: list[Any], gateways: list[Gateway]) -> None:
    for mesh in meshes:
        if mesh is not None:
            mesh.close(reason="test over")
    for endpoint in endpoints:
        endpoint.close()
    for gateway in gateways:
        gateway.close()


def _broadcast_all(meshes: list[PartyLinkTransport], arrays: Any) -> list[Any]:
    results: list[Any] = [None] * len(meshes)

    def run(party: int) -> None:
        results[party] = meshes[party].broadcast(arrays(party))

    threads = [threading.Thread(target=run, args=(p,)) for p in range(len(meshes))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


@pytest.mark.parametrize("via_gateway", [False, True], ids=["direct", "through gateways"])
def test_three_workers_exchange_arrays_over_tls(pki: list[PartyTLS], via_gateway: bool) -> None:
    endpoints, meshes, gateways = _mesh(3, pki, via_gateway)
    try:
        big = np.arange(3_000_000, dtype=np.uint64)  # 24 MB: many TLS records per message

        def arrays(party: int) -> list[Any]:
            return [
                big + np.uint64(party),
                np.zeros((0, 4), np.uint8),
                np.arange(12, dtype=np.int32).reshape(3, 4) * party,
            ]

        for _ in range(3):
            results = _broadcast_all(meshes, arrays)
            for party, received in enumerate(results):
                for peer, got in received.items():
                    assert peer != party
                    for sent, back in zip(arrays(peer), got, strict=True):
                        assert back.dtype == sent.dtype and back.shape == sent.shape
                        np.testing.assert_array_equal(back, sent)
        if via_gateway:
            assert [gateway.relayed for gateway in gateways] == [2, 1, 0]  # lower ids accept
    finally:
        _close(endpoints, meshes, gateways)


def test_a_certificate_for_another_party_is_refused(pki: list[PartyTLS]) -> None:
    """Party 1's worker presents party 2's certificate: party 0 refuses and says why."""
    swapped = [pki[0], pki[2]]
    addresses: dict[int, str] = {}

    async def locate(peer: int) -> str | None:
        return addresses.get(peer)

    accepting = PartyLinkEndpoint(LinkIdentity(JOB, 0, 0, 2), swapped[0], locate)
    dialling = PartyLinkEndpoint(LinkIdentity(JOB, 0, 1, 2), swapped[1], locate)
    addresses[0] = accepting.start()
    addresses[1] = dialling.start()
    try:
        with pytest.raises(PeerLost, match="does not name party-1"):
            dialling.connect(pb.Hello(spec_hash="h"), 2.0)
    finally:
        accepting.close()
        dialling.close()


def test_a_connection_that_routes_nowhere_is_closed() -> None:
    gateway = Gateway(("127.0.0.1", 0), lambda name: None)
    gateway.start()
    try:
        with socket.create_connection(("127.0.0.1", gateway.port), timeout=5.0) as sock:
            sock.sendall(b"TALLY-ROUTE w0-nothing.party-0\n")
            assert sock.recv(16) == b""
    finally:
        gateway.close()


def _inject(mesh: PartyLinkTransport, frame: pb.Frame, data: bytes = b"") -> None:
    link = mesh._links[1 - mesh.party]
    link.send([encode_head(frame, len(data)), data]).result(timeout=10)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"job_id": "another-job"}, "for job 'another-job'"),
        ({"sender": 0}, "claiming to be party 0"),
        ({"kind": pb.Frame.HELLO}, "a frame that carries none"),
        ({"round": 50}, "party 1 is in round 50, this party in round"),
    ],
    ids=["unknown job", "wrong sender", "hello inside a mesh", "round out of order"],
)
def test_a_peer_out_of_protocol_breaks_the_mesh(fields: dict[str, Any], message: str) -> None:
    endpoints, meshes, gateways = _mesh(2, None, via_gateway=True)
    try:
        sent = np.arange(4, dtype=np.uint64)
        results = _broadcast_all(meshes, lambda party: [sent + np.uint64(party)])
        assert np.array_equal(results[0][1][0], sent + np.uint64(1))  # the mesh works
        expected = meshes[0].rounds
        frame = {"kind": pb.Frame.DATA, "job_id": JOB, "worker": 0, "sender": 1, "round": expected}
        frame.update(fields)
        header = pb.ArrayHeader(dtype="<u8", shape=[1])
        _inject(meshes[1], pb.Frame(arrays=[header], **frame), bytes(8))
        with pytest.raises(ProtocolViolation, match=message):
            meshes[0].broadcast([sent])
    finally:
        _close(endpoints, meshes, gateways)


def test_a_peer_that_leaves_is_seen_as_lost_and_the_mesh_rebuilds(pki: list[PartyTLS]) -> None:
    endpoints, meshes, gateways = _mesh(2, pki[:2], via_gateway=False)
    try:
        meshes[1].close(reason="restarting")
        with pytest.raises(PeerLost, match="restarting"):
            meshes[0].broadcast([np.zeros(1, np.uint64)])
        rebuilt: list[Any] = [None, None]

        def connect(party: int) -> None:
            rebuilt[party] = endpoints[party].connect(pb.Hello(spec_hash="again"), 30.0)

        threads = [threading.Thread(target=connect, args=(p,)) for p in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert rebuilt[0][1][1].spec_hash == "again"
        meshes[:] = [rebuilt[0][0], rebuilt[1][0]]
        results = _broadcast_all(meshes, lambda party: [np.full(5, party, np.int64)])
        assert results[0][1][0].tolist() == [1] * 5 and results[1][0][0].tolist() == [0] * 5
    finally:
        _close(endpoints, meshes, gateways)


def test_plaintext_grpc_reaches_the_name_partycontrol_has_in_development_mode() -> None:
    """Without TLS there is no server name: the HTTP/2 preface routes as "" (PartyControl)."""
    with socket.create_server(("127.0.0.1", 0)) as upstream:
        asked: list[str] = []

        def resolve(name: str) -> tuple[str, int] | None:
            asked.append(name)
            return ("127.0.0.1", upstream.getsockname()[1]) if name == "" else None

        gateway = Gateway(("127.0.0.1", 0), resolve)
        gateway.start()
        try:
            with socket.create_connection(("127.0.0.1", gateway.port), timeout=5.0) as sock:
                sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
                upstream.settimeout(5.0)
                accepted, _ = upstream.accept()
                with accepted:
                    accepted.settimeout(5.0)
                    assert accepted.recv(64).startswith(b"PRI * HTTP/2.0")
        finally:
            gateway.close()
        assert asked == [""]


def test_connections_that_never_say_hello_cannot_hold_every_thread() -> None:
    """Past MAX_ROUTING silent connections, a new one is closed at once, not kept 10 s."""
    from tally.execution.gateway import MAX_ROUTING

    gateway = Gateway(("127.0.0.1", 0), lambda name: None)
    gateway.start()
    silent = [
        socket.create_connection(("127.0.0.1", gateway.port), timeout=5.0)
        for _ in range(MAX_ROUTING)
    ]
    try:
        time.sleep(0.5)  # every silent one is being routed (waiting for its hello)
        with socket.create_connection(("127.0.0.1", gateway.port), timeout=5.0) as extra:
            started = time.monotonic()
            assert extra.recv(16) == b""  # closed without an answer
            assert time.monotonic() - started < 2.0
    finally:
        for sock in silent:
            sock.close()
        gateway.close()
