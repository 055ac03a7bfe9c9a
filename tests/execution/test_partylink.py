"""PartyLink frames: the receive-side parser, and a peer out of protocol is refused.

Two workers of one job on loopback (plaintext: development mode) build a mesh; then
one of them writes hand-made frames on its link, as a faulty or hostile peer could.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest

from tally._generated import partylink_pb2 as pb
from tally.execution.partylink import (
    CHUNK_BYTES,
    LinkIdentity,
    PartyLinkEndpoint,
    PartyLinkTransport,
    ProtocolViolation,
    _Assembly,
    _frames,
    _parse,
)

JOB = "job-frames"


def test_parsed_frames_equal_protobufs_parse_without_copying_data() -> None:
    words = CHUNK_BYTES // 8 + 100_000
    arrays = [np.arange(words, dtype=np.uint64), np.zeros(0, np.uint8), np.ones(3, np.int32)]
    frames = list(_frames(LinkIdentity(JOB, 2, 1, 3), 9, arrays))
    assert len(frames) == 3  # the big array in two chunks, then the small one
    for raw in frames:
        reference = pb.Frame.FromString(raw)
        frame, data = _parse(raw)
        assert bytes(data) == reference.data
        assert data.obj is raw  # a view of the received message
        reference.ClearField("data")
        assert frame == reference
    hello = pb.Frame(
        kind=pb.Frame.HELLO,
        job_id=JOB,
        sender=2,
        hello=pb.Hello(spec_hash="h", stages_held=[1, 2], tuple_next={"epoch": 3}),
    ).SerializeToString()
    frame, data = _parse(hello)
    assert frame == pb.Frame.FromString(hello) and len(data) == 0


def test_assembly_keeps_whole_arrays_in_place_and_copies_split_ones() -> None:
    words = CHUNK_BYTES // 8 + 100_000
    arrays = [
        np.arange(words, dtype=np.uint64),
        np.zeros((0, 4), np.uint8),
        np.arange(12, dtype=np.int32).reshape(3, 4),
        np.arange(1000, dtype=np.uint64) * 3,
    ]
    received = [_parse(raw) for raw in _frames(LinkIdentity(JOB, 0, 1, 3), 4, arrays)]
    assert len(received) == 4  # the first array in two chunks, then one frame per array
    assembly = _Assembly(received[0].frame)
    for incoming in received:
        assert not assembly.complete()
        assembly.add(incoming.data)
    assert assembly.complete()
    for got, sent in zip(assembly.arrays, arrays, strict=True):
        assert got.dtype == sent.dtype and got.shape == sent.shape
        np.testing.assert_array_equal(got, sent)
    assert assembly.arrays[0].flags.owndata  # split over two frames: copied
    last = received[-1].data
    assert np.shares_memory(assembly.arrays[3], np.frombuffer(last, np.uint8))  # not copied
    assert not assembly.arrays[3].flags.writeable
    with pytest.raises(ProtocolViolation, match="more bytes"):
        assembly.add(b"x")


@pytest.mark.parametrize(
    "raw",
    [b"\x42\x10abc", b"\x0a", b"\x08\xff\xff", b"\x0f\x00", b"\x42" + b"\xff" * 11],
    ids=["truncated data", "no length", "unfinished varint", "bad wire type", "huge varint"],
)
def test_malformed_frames_are_protocol_violations(raw: bytes) -> None:
    with pytest.raises(ProtocolViolation):
        _parse(raw)


def _mesh() -> tuple[list[PartyLinkEndpoint], list[PartyLinkTransport]]:
    addresses: dict[int, str] = {}

    async def locate(peer: int) -> str | None:
        return addresses.get(peer)

    endpoints = [
        PartyLinkEndpoint(LinkIdentity(JOB, 0, party, 2), None, locate, io_timeout=10.0)
        for party in range(2)
    ]
    for party, endpoint in enumerate(endpoints):
        addresses[party] = endpoint.start()
    meshes: list[Any] = [None, None]

    def connect(party: int) -> None:
        meshes[party] = endpoints[party].connect(pb.Hello(spec_hash="same"), 30.0)[0]

    threads = [threading.Thread(target=connect, args=(party,)) for party in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return endpoints, meshes


def _inject(endpoint: PartyLinkEndpoint, mesh: PartyLinkTransport, frame: pb.Frame) -> None:
    link = mesh._links[1 - mesh.party]
    endpoint.submit(link.write(frame.SerializeToString())).result(timeout=10)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"job_id": "another-job"}, "for job 'another-job'"),
        ({"sender": 0}, "claiming to be party 0"),
        ({"round": 0, "kind": pb.Frame.CHUNK}, "unexpected frame"),
        ({"round": 50}, "party 1 is in round 50, this party in round"),
    ],
    ids=["unknown job", "wrong sender", "chunk without a round", "round out of order"],
)
def test_a_peer_out_of_protocol_breaks_the_mesh(fields: dict[str, Any], message: str) -> None:
    endpoints, meshes = _mesh()
    try:
        sent = np.arange(4, dtype=np.uint64)
        results: list[Any] = [None, None]

        def first_round(party: int) -> None:
            results[party] = meshes[party].broadcast([sent + np.uint64(party)])

        threads = [threading.Thread(target=first_round, args=(p,)) for p in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert np.array_equal(results[0][1][0], sent + np.uint64(1))  # the mesh works
        expected = meshes[0].rounds
        frame = {"kind": pb.Frame.DATA, "job_id": JOB, "worker": 0, "sender": 1, "round": expected}
        frame.update(fields)
        header = pb.ArrayHeader(dtype="<u8", shape=[1])
        _inject(
            endpoints[1], meshes[1], pb.Frame(arrays=[header], data=bytes(8), last=True, **frame)
        )
        with pytest.raises(ProtocolViolation, match=message):
            meshes[0].broadcast([sent])
    finally:
        for mesh in meshes:
            mesh.close(reason="test over")
        for endpoint in endpoints:
            endpoint.close()
