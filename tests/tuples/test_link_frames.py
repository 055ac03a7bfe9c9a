"""What a peer sends is parsed defensively: malformed bytes are a clean error, never a crash.

Property tests (hypothesis) of the three parsers that read bytes another party sent:
PartyLink frames (``tally.execution.partylink.read_message``), TupleLink envelopes
(``tally.tuples.link.decode``) and shuffle correlations
(``tally.mpc.offline.wire.decode_shuffle``).  Random and mutated inputs either parse
to what was encoded or raise the parser's own error type; nothing else escapes.
"""

from __future__ import annotations

import contextlib
import socket

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tally._generated import partylink_pb2 as pb
from tally._generated import tuples_pb2
from tally.execution.partylink import encode_head, read_message
from tally.mpc.offline.wire import decode_shuffle, encode_shuffle
from tally.mpc.transport import TransportError
from tally.mpc.tuples import HelperShare, PermuterShare
from tally.tuples.link import decode, encode

FUZZ = settings(max_examples=400, deadline=None, database=None, derandomize=True)


def _read(raw: bytes) -> tuple[pb.Frame, list[np.ndarray]] | None:
    """What PartyLink's reader makes of ``raw`` arriving on a connection (then its end)."""
    left, right = socket.socketpair()
    with left, right:
        left.sendall(raw)
        left.shutdown(socket.SHUT_WR)
        return read_message(right)


def _wire(round_number: int, data: bytes) -> bytes:
    header = pb.ArrayHeader(dtype="|u1", shape=[len(data)])
    frame = pb.Frame(kind=pb.Frame.DATA, round=round_number, arrays=[header])
    return encode_head(frame, len(data)) + data


@FUZZ
@given(st.binary(max_size=512))
def test_random_bytes_are_a_frame_or_a_protocol_violation(raw: bytes) -> None:
    with contextlib.suppress(TransportError):
        _read(raw)
    with contextlib.suppress(TransportError):
        _read(b"TPL1" + raw)


@FUZZ
@given(st.binary(max_size=256), st.integers(0, 400), st.integers(0, 255))
def test_a_mutated_frame_keeps_its_data_or_is_refused(data: bytes, at: int, byte: int) -> None:
    raw = bytearray(_wire(7, data))
    parsed = _read(bytes(raw))
    assert parsed is not None and parsed[0].round == 7 and parsed[1][0].tobytes() == data
    raw[at % len(raw)] = byte
    with contextlib.suppress(TransportError):
        _read(bytes(raw))


arrays = st.lists(
    st.integers(0, 40).flatmap(
        lambda n: st.sampled_from(["<u8", "<i8", "|u1", "|b1"]).map(
            lambda dtype: np.arange(n).astype(dtype)
        )
    ),
    max_size=4,
)


@FUZZ
@given(arrays)
def test_envelopes_round_trip(message: list[np.ndarray]) -> None:
    got = decode(encode("s", 1, 3, message))
    assert [a.tolist() for a in got] == [a.tolist() for a in message]


@FUZZ
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["<u8", "|O", "V8", "<u8", "|u1", "garbage", "<c16"]),
            st.lists(st.integers(-5, 1 << 62), max_size=3),
        ),
        max_size=3,
    ),
    st.binary(max_size=200),
)
def test_malformed_envelopes_are_a_transport_error(
    headers: list[tuple[str, list[int]]], data: bytes
) -> None:
    envelope = tuples_pb2.TupleEnvelope(session="s", sender=1, round=0, data=data)
    for dtype, shape in headers:
        envelope.arrays.add(dtype=dtype, shape=[max(s, 0) for s in shape] if shape else [])
        if shape and min(shape) < 0:
            envelope.arrays[-1].ClearField("shape")
    try:
        out = decode(envelope)
    except TransportError:
        return
    assert sum(a.nbytes for a in out) == len(data)  # accepted: exactly what was sent


@FUZZ
@given(st.integers(0, 6), st.integers(1, 3), st.integers(0, 3), st.binary(max_size=64))
def test_shuffle_correlations_round_trip_and_garbage_is_a_value_error(
    rows: int, width: int, cut: int, garbage: bytes
) -> None:
    rng = np.random.default_rng(rows * 10 + width)
    share = [
        PermuterShare(rng.permutation(rows), rng.integers(0, 2**63, (rows, width), np.uint64)),
        HelperShare(
            rng.integers(0, 2**63, (rows, width), np.uint64),
            rng.integers(0, 2**63, (rows, width), np.uint64),
        ),
    ]
    encoded = encode_shuffle(share)
    decoded = decode_shuffle(encoded)
    assert np.array_equal(decoded[0].permutation, share[0].permutation)  # type: ignore[union-attr]
    for broken in (encoded[: len(encoded) - 1 - cut], garbage, encoded[:24] + garbage):
        with contextlib.suppress(ValueError):
            decode_shuffle(broken)
