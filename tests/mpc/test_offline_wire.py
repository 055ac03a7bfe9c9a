"""Tests for tally.mpc.offline.layout and wire: stored sections and shuffle bytes round-trip."""

from __future__ import annotations

import numpy as np
import pytest

from tally.mpc.bits import from_planes, unpack_lanes
from tally.mpc.offline.layout import from_sections, parse_kind, to_sections
from tally.mpc.offline.wire import decode_shuffle, encode_shuffle
from tally.mpc.tuples import Dealer, HelperShare, PermuterShare


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
