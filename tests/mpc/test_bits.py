"""Tests for tally.mpc.bits: the bit-sliced layout, checked against numpy bit unpacking."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from tally.mpc.bits import (
    from_planes,
    lane_mask,
    pack_lanes,
    to_planes,
    transpose64,
    unpack_lanes,
    word_count,
)

LENGTHS = [0, 1, 63, 64, 65, 1000]
words_strategy = st.lists(st.integers(0, 2**64 - 1), max_size=200)


def bit_matrix(values: np.ndarray, bits: int = 64) -> np.ndarray:
    """numpy reference: ``matrix[i, r]`` is bit i of ``values[r]``."""
    positions = np.arange(bits, dtype=np.uint64)[:, None]
    return ((values[None, :] >> positions) & np.uint64(1)).astype(np.uint8)


def random_words(rows: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2**64, size=rows, dtype=np.uint64)


@pytest.mark.parametrize("rows", LENGTHS)
def test_word_count_and_lane_mask(rows: int) -> None:
    assert word_count(rows) == -(-rows // 64)
    mask = lane_mask(rows)
    assert mask.shape == (word_count(rows),)
    np.testing.assert_array_equal(unpack_lanes(mask, word_count(rows) * 64)[:rows], 1)
    np.testing.assert_array_equal(unpack_lanes(mask, word_count(rows) * 64)[rows:], 0)


@pytest.mark.parametrize("rows", LENGTHS)
def test_to_planes_matches_numpy_bits(rows: int) -> None:
    values = random_words(rows, seed=rows)
    planes = to_planes(values)
    assert planes.shape == (64, word_count(rows))
    assert planes.dtype == np.uint64
    expected = bit_matrix(values)
    for position in range(64):
        np.testing.assert_array_equal(unpack_lanes(planes[position], rows), expected[position])
        np.testing.assert_array_equal(planes[position], pack_lanes(expected[position]))


@pytest.mark.parametrize("rows", LENGTHS)
@pytest.mark.parametrize("bits", [1, 7, 32, 63, 64])
def test_planes_roundtrip_keeps_low_bits(rows: int, bits: int) -> None:
    values = random_words(rows, seed=bits)
    planes = to_planes(values, bits)
    assert planes.shape == (bits, word_count(rows))
    np.testing.assert_array_equal(planes, to_planes(values)[:bits])
    low = values if bits == 64 else values & np.uint64((1 << bits) - 1)
    np.testing.assert_array_equal(from_planes(planes, rows), low)


@pytest.mark.parametrize("rows", LENGTHS)
def test_planes_of_padding_lanes_are_zero(rows: int) -> None:
    planes = to_planes(np.full(rows, np.uint64(2**64 - 1)))
    np.testing.assert_array_equal(planes, np.broadcast_to(lane_mask(rows), planes.shape))


@pytest.mark.parametrize("rows", LENGTHS)
def test_pack_unpack_lanes_roundtrip(rows: int) -> None:
    row_bits = np.random.default_rng(rows).integers(0, 2, size=rows, dtype=np.uint8)
    packed = pack_lanes(row_bits)
    assert packed.dtype == np.uint64 and packed.shape == (word_count(rows),)
    np.testing.assert_array_equal(unpack_lanes(packed, rows), row_bits)
    reference = np.zeros(word_count(rows) * 64, dtype=np.uint8)
    reference[:rows] = row_bits
    np.testing.assert_array_equal(packed, np.packbits(reference, bitorder="little").view("<u8"))


def test_pack_lanes_takes_the_low_bit_of_any_integer_dtype() -> None:
    row_bits = np.array([1, 2, 3, 0, 5], dtype=np.int64)
    np.testing.assert_array_equal(unpack_lanes(pack_lanes(row_bits), 5), [1, 0, 1, 0, 1])
    as_uint64 = np.array([1, 0, 1], dtype=np.uint64)
    np.testing.assert_array_equal(unpack_lanes(pack_lanes(as_uint64), 3), [1, 0, 1])


def test_transpose64_transposes_each_block() -> None:
    blocks = np.random.default_rng(3).integers(0, 2**64, size=(3, 64), dtype=np.uint64)
    original = blocks.copy()
    transposed = transpose64(blocks.copy())
    for block in range(3):
        before = bit_matrix(original[block])  # before[j, i] = bit j of row i
        after = bit_matrix(transposed[block])
        np.testing.assert_array_equal(after, before.T)
    np.testing.assert_array_equal(transpose64(transposed.copy()), original)


@given(words_strategy)
@example([])
@example([0])
@example([2**64 - 1])
@example([1, 2**63, 2**62 - 1, 2**64 - 2**62 + 1])
def test_planes_roundtrip_property(words: list[int]) -> None:
    values = np.array(words, dtype=np.uint64)
    planes = to_planes(values)
    np.testing.assert_array_equal(from_planes(planes, len(words)), values)
    expected = bit_matrix(values)
    unpacked = np.array([unpack_lanes(plane, len(words)) for plane in planes])
    np.testing.assert_array_equal(unpacked.reshape(64, len(words)), expected)


@given(st.lists(st.integers(0, 1), max_size=300))
def test_pack_lanes_property(row_bits: list[int]) -> None:
    array = np.array(row_bits, dtype=np.uint8)
    np.testing.assert_array_equal(unpack_lanes(pack_lanes(array), len(row_bits)), array)
