"""Tests for tally.mpc.offline.layout and wire: stored sections and shuffle bytes round-trip."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from tally.mpc.bits import from_planes, unpack_lanes
from tally.mpc.offline.layout import from_sections, parse_kind, to_sections
from tally.mpc.offline.wire import decode_shuffle, encode_shuffle, encode_shuffle_parts
from tally.mpc.tuples import Dealer, HelperShare, PermuterShare, ShuffleShare


@pytest.mark.parametrize(
    "name", ["triples", "bit_triples", "dabits", "edabits:64", "edabits:7", "input_masks"]
)
def test_sections_round_trip_the_engine_layout(name: str) -> None:
    kind = parse_kind(name)
    source = Dealer(2, seed=1).source(0)
    count = 130
    if kind.base == "edabits":
        shares: tuple[np.ndarray, ...] = source.edabits(count, kind.width)
    elif kind.base == "input_masks":
        shares = (source.input_masks(count),)
    else:
        shares = getattr(source, kind.base)(count)
    sections = to_sections(kind, shares, count)
    assert sum(len(s) for s in sections) == count * kind.tuple_bytes
    back = from_sections(kind, sections, count)
    np.testing.assert_array_equal(back[0], shares[0])
    if kind.base == "dabits":  # lanes past ``count`` are padding: compare the real ones
        np.testing.assert_array_equal(unpack_lanes(back[1], count), unpack_lanes(shares[1], count))
    elif kind.base == "edabits":
        assert back[1].shape == shares[1].shape
        np.testing.assert_array_equal(from_planes(back[1], count), from_planes(shares[1], count))
    else:
        for original, restored in zip(shares, back, strict=True):
            np.testing.assert_array_equal(restored, original)


def test_shuffle_correlations_round_trip() -> None:
    correlation = Dealer(3, seed=2).source(1).shuffle(17, "axa")
    back = decode_shuffle(encode_shuffle(correlation))
    assert len(back) == 3
    for original, restored in zip(correlation, back, strict=True):
        assert type(original) is type(restored)
        if isinstance(original, PermuterShare) and isinstance(restored, PermuterShare):
            np.testing.assert_array_equal(original.permutation, restored.permutation)
            np.testing.assert_array_equal(original.delta, restored.delta)
        elif isinstance(original, HelperShare) and isinstance(restored, HelperShare):
            np.testing.assert_array_equal(original.mask, restored.mask)
            np.testing.assert_array_equal(original.output, restored.output)


def test_malformed_shuffle_bytes_are_refused() -> None:
    data = encode_shuffle(Dealer(3, seed=2).source(0).shuffle(4, "a"))
    with pytest.raises(ValueError):
        decode_shuffle(data + b"\0")


@pytest.mark.parametrize("name", ["quads", "edabits", "edabits:0", "edabits:65", "triples:3"])
def test_unknown_kinds_are_refused(name: str) -> None:
    with pytest.raises(ValueError):
        parse_kind(name)


def test_shuffle_wire_format_is_fixed() -> None:
    """Header, then per step a role byte and little-endian arrays, in order."""
    permutation = np.array([2, 0, 1], dtype=np.int64)
    delta = np.arange(6, dtype=np.uint64).reshape(3, 2)
    mask = delta + np.uint64(10)
    output = delta + np.uint64(20)
    correlation: ShuffleShare = [PermuterShare(permutation, delta), HelperShare(mask, output)]
    expected = (
        struct.pack("<QQQ", 3, 2, 2)
        + b"\0"
        + struct.pack("<3q", 2, 0, 1)
        + struct.pack("<6Q", *range(6))
        + b"\1"
        + struct.pack("<6Q", *range(10, 16))
        + struct.pack("<6Q", *range(20, 26))
    )
    assert encode_shuffle(correlation) == expected
    assert encode_shuffle([]) == struct.pack("<QQQ", 0, 0, 0)
    assert decode_shuffle(encode_shuffle([])) == []


@pytest.mark.parametrize("rows", [0, 1, 17])
def test_shuffle_parts_are_views_of_the_arrays_in_wire_order(rows: int) -> None:
    correlation = Dealer(3, seed=3).source(0).shuffle(rows, "axa")
    parts, length = encode_shuffle_parts(correlation)
    joined = b"".join(parts)
    assert joined == encode_shuffle(correlation)
    assert length == len(joined) == sum(len(part) for part in parts)
    arrays = [a for step in correlation for a in vars(step).values()]
    views = [part for part in parts if isinstance(part, memoryview)]
    assert len(views) == len(arrays) == 6
    for view, array in zip(views, arrays, strict=True):
        assert view.nbytes == array.nbytes
        if rows:
            assert np.shares_memory(np.frombuffer(view, np.uint8), array)


def test_decoded_arrays_alias_the_buffer() -> None:
    data = encode_shuffle(Dealer(3, seed=4).source(2).shuffle(9, "ax"))
    for buffer in (data, memoryview(data)):
        for step in decode_shuffle(buffer):
            for array in vars(step).values():
                assert np.shares_memory(array, np.frombuffer(data, np.uint8))
                assert not array.flags.writeable
    writable = bytearray(data)
    first = decode_shuffle(writable)[0]
    assert isinstance(first, HelperShare)
    assert first.mask.dtype == np.uint64 and first.mask.flags.writeable
    offset = 24 + 1  # the header, then the first step's role byte
    writable[offset : offset + 8] = (12345).to_bytes(8, "little")
    assert int(first.mask[0, 0]) == 12345


@pytest.mark.parametrize("cut", [0, 10, 24, 25, 100])
def test_truncated_shuffle_bytes_are_refused(cut: int) -> None:
    data = encode_shuffle(Dealer(3, seed=2).source(0).shuffle(4, "a"))
    with pytest.raises(ValueError):
        decode_shuffle(data[:cut])
