"""Tests for tally.mpc.compare: sign, equality, bit decomposition and bit conversion vs numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from tally.mpc.bits import from_planes, to_planes, word_count
from tally.mpc.compare import bit_decompose, bits_to_arithmetic, equal, less_than_zero
from tally.mpc.party import Party
from tally.mpc.ring import encode_int, reconstruct, split
from tally.mpc.simulate import run_parties

LARGEST = 2**62 - 1
EDGE_INTS = [0, 1, -1, LARGEST, -LARGEST]
PARTY_COUNTS = pytest.mark.parametrize("parties", [2, 3, 5])
TUPLE_SOURCES = pytest.mark.parametrize("seed", [2024, None], ids=["seeded-dealer", "os-dealer"])
ring_ints = st.integers(-LARGEST, LARGEST)
TIMEOUT = 60.0


def share(values: np.ndarray, parties: int, seed: int = 0) -> list[np.ndarray]:
    """Additive shares of signed integers (encoded into the ring first)."""
    return split(
        encode_int(np.asarray(values, dtype=np.int64)), parties, np.random.default_rng(seed)
    )


def xor_share(secret: np.ndarray, parties: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    shares = [
        rng.integers(0, 2**64, size=secret.shape, dtype=np.uint64) for _ in range(parties - 1)
    ]
    last = np.array(secret, dtype=np.uint64, copy=True)
    for other in shares:
        last ^= other
    return [*shares, last]


def xor_reconstruct(shares: list[np.ndarray]) -> np.ndarray:
    combined: np.ndarray = np.bitwise_xor.reduce(np.stack(shares), axis=0)
    return combined


def signed_values(rows: int, seed: int) -> np.ndarray:
    """Edge values followed by uniform signed values in (-2^62, 2^62) and small ones."""
    rng = np.random.default_rng(seed)
    wide = rng.integers(-LARGEST, LARGEST, size=rows // 2, endpoint=True)
    small = rng.integers(-3, 4, size=rows - rows // 2)
    return np.concatenate([EDGE_INTS, wide, small]).astype(np.int64)


def as_bits(flags: np.ndarray) -> np.ndarray:
    return np.asarray(flags, dtype=np.uint64)


# -- less_than_zero ---------------------------------------------------------------------


@PARTY_COUNTS
@TUPLE_SOURCES
def test_less_than_zero_matches_numpy(parties: int, seed: int | None) -> None:
    values = signed_values(1000, seed=parties)
    shared = share(values, parties)

    def program(party: Party) -> tuple[np.ndarray, int]:
        return less_than_zero(party, shared[party.id]), party.transport.rounds

    results = run_parties(parties, program, seed=seed, timeout=TIMEOUT)
    assert all(rounds == 8 for _, rounds in results)  # as the docstring promises
    np.testing.assert_array_equal(reconstruct([r for r, _ in results]), as_bits(values < 0))


@PARTY_COUNTS
@TUPLE_SOURCES
@given(st.lists(ring_ints, max_size=70))
@example(EDGE_INTS)
@example([])
@example([-1])
@example([LARGEST])
@example([-LARGEST])
def test_less_than_zero_property(parties: int, seed: int | None, values: list[int]) -> None:
    column = np.array(values, dtype=np.int64)
    shared = share(column, parties)
    results = run_parties(
        parties, lambda party: less_than_zero(party, shared[party.id]), seed=seed, timeout=TIMEOUT
    )
    signs = reconstruct(results)
    assert signs.shape == column.shape
    np.testing.assert_array_equal(signs, as_bits(column < 0))


# -- equal ------------------------------------------------------------------------------


@PARTY_COUNTS
@TUPLE_SOURCES
def test_equal_full_width_matches_numpy(parties: int, seed: int | None) -> None:
    left = signed_values(600, seed=1)
    right = left.copy()
    changed = np.random.default_rng(2).random(left.size) < 0.5
    right[changed] = signed_values(600, seed=3)[changed]
    right[-1] = left[-1] ^ 1  # differs in the lowest bit only
    shared_left, shared_right = share(left, parties, 1), share(right, parties, 2)

    def program(party: Party) -> tuple[np.ndarray, int]:
        return equal(party, shared_left[party.id], shared_right[party.id]), party.transport.rounds

    results = run_parties(parties, program, seed=seed, timeout=TIMEOUT)
    assert all(rounds == 8 for _, rounds in results)
    np.testing.assert_array_equal(reconstruct([r for r, _ in results]), as_bits(left == right))


@PARTY_COUNTS
@TUPLE_SOURCES
@pytest.mark.parametrize("width", [1, 2, 8, 13, 32, 63])
def test_equal_small_width_within_its_promise(parties: int, seed: int | None, width: int) -> None:
    rng = np.random.default_rng(width)
    rows = 300
    left = rng.integers(-LARGEST // 2, LARGEST // 2, size=rows)
    spread = 2 ** (width - 1) - 1  # |x - y| < 2^(width - 1)
    offsets = rng.integers(-spread, spread, size=rows, endpoint=True)
    offsets[: rows // 2] = 0
    offsets[-2:] = [spread, -spread]
    right = left + offsets  # may leave (-2^62, 2^62): share the ring elements directly
    shared_left = split(left.view(np.uint64), parties, np.random.default_rng(1))
    shared_right = split(right.view(np.uint64), parties, np.random.default_rng(2))

    def program(party: Party) -> tuple[np.ndarray, int]:
        result = equal(party, shared_left[party.id], shared_right[party.id], width)
        return result, party.transport.rounds

    results = run_parties(parties, program, seed=seed, timeout=TIMEOUT)
    assert all(rounds == 2 + math.ceil(math.log2(width)) for _, rounds in results)
    np.testing.assert_array_equal(reconstruct([r for r, _ in results]), as_bits(left == right))


@PARTY_COUNTS
@TUPLE_SOURCES
@given(st.lists(st.tuples(ring_ints, st.booleans()), max_size=60))
@example([(value, True) for value in EDGE_INTS] + [(value, False) for value in EDGE_INTS])
@example([])
@example([(LARGEST, False)])
def test_equal_property(parties: int, seed: int | None, rows: list[tuple[int, bool]]) -> None:
    left = np.array([value for value, _ in rows], dtype=np.int64)
    # the other operand: the same value, or its negation / a neighbour when that differs
    right = np.array(
        [value if same else (-value if value else 1) for value, same in rows], dtype=np.int64
    )
    shared_left, shared_right = share(left, parties, 1), share(right, parties, 2)
    results = run_parties(
        parties,
        lambda party: equal(party, shared_left[party.id], shared_right[party.id]),
        seed=seed,
        timeout=TIMEOUT,
    )
    np.testing.assert_array_equal(reconstruct(results), as_bits(left == right))


@PARTY_COUNTS
def test_equal_refuses_bad_widths(parties: int) -> None:
    shared = share(np.array([1, 2]), parties)
    for width in (0, 65):

        def program(party: Party, width: int = width) -> np.ndarray:
            return equal(party, shared[party.id], shared[party.id], width)

        with pytest.raises(ValueError, match="width"):
            run_parties(parties, program, seed=1)


# -- bit_decompose ----------------------------------------------------------------------


@PARTY_COUNTS
@TUPLE_SOURCES
@pytest.mark.parametrize("width", [1, 2, 7, 16, 33, 63, 64])
def test_bit_decompose_of_width_bit_values(parties: int, seed: int | None, width: int) -> None:
    rng = np.random.default_rng(width)
    top = 2**width - 1
    values = rng.integers(0, 2**64, size=400, dtype=np.uint64) & np.uint64(top)
    values[:3] = [0, 1, top]
    shared = split(values, parties, np.random.default_rng(1))

    def program(party: Party) -> tuple[np.ndarray, int]:
        return bit_decompose(party, shared[party.id], width), party.transport.rounds

    results = run_parties(parties, program, seed=seed, timeout=TIMEOUT)
    assert all(rounds == 1 + math.ceil(math.log2(width)) for _, rounds in results)
    planes = xor_reconstruct([planes for planes, _ in results])
    assert planes.shape == (width, word_count(values.size))
    np.testing.assert_array_equal(from_planes(planes, values.size), values)
    np.testing.assert_array_equal(planes, to_planes(values, width))


@PARTY_COUNTS
@TUPLE_SOURCES
@given(st.lists(ring_ints, max_size=70), st.integers(1, 64))
@example(EDGE_INTS, 64)
@example(EDGE_INTS, 5)
@example([], 8)
@example([-1], 1)
def test_bit_decompose_gives_the_low_bits_of_signed_values(
    parties: int, seed: int | None, values: list[int], width: int
) -> None:
    column = np.array(values, dtype=np.int64)
    shared = share(column, parties)
    results = run_parties(
        parties,
        lambda party: bit_decompose(party, shared[party.id], width),
        seed=seed,
        timeout=TIMEOUT,
    )
    low_bits = column.view(np.uint64)
    if width < 64:
        low_bits = low_bits & np.uint64(2**width - 1)
    np.testing.assert_array_equal(from_planes(xor_reconstruct(results), column.size), low_bits)


# -- bits_to_arithmetic -----------------------------------------------------------------


@PARTY_COUNTS
@TUPLE_SOURCES
@pytest.mark.parametrize("rows", [1, 63, 64, 65, 1000])
def test_bits_to_arithmetic_matches_numpy(parties: int, seed: int | None, rows: int) -> None:
    values = np.random.default_rng(rows).integers(0, 2**64, size=rows, dtype=np.uint64)
    planes = to_planes(values, 5)
    shared = xor_share(planes, parties)

    def program(party: Party) -> tuple[np.ndarray, int]:
        return bits_to_arithmetic(party, shared[party.id], rows), party.transport.rounds

    results = run_parties(parties, program, seed=seed, timeout=TIMEOUT)
    assert all(rounds == 1 for _, rounds in results)
    converted = reconstruct([r for r, _ in results])
    expected = (values[None, :] >> np.arange(5, dtype=np.uint64)[:, None]) & np.uint64(1)
    assert converted.shape == (5, rows)
    np.testing.assert_array_equal(converted, expected)


@PARTY_COUNTS
def test_bits_to_arithmetic_of_one_plane(parties: int) -> None:
    flags = np.array([1, 0, 0, 1, 1], dtype=np.uint64)
    shared = xor_share(to_planes(flags, 1)[0], parties)  # a single plane, shape (words,)
    results = run_parties(
        parties, lambda party: bits_to_arithmetic(party, shared[party.id], 5), seed=5
    )
    np.testing.assert_array_equal(reconstruct(results), flags[None, :])


# -- empty columns ----------------------------------------------------------------------


@PARTY_COUNTS
@TUPLE_SOURCES
def test_comparisons_of_empty_columns(parties: int, seed: int | None) -> None:
    empty = np.zeros(0, dtype=np.uint64)

    def program(party: Party) -> list[np.ndarray]:
        return [
            less_than_zero(party, empty),
            equal(party, empty, empty),
            equal(party, empty, empty, 8),
            bit_decompose(party, empty, 8),
        ]

    for sign, same, same_small, planes in run_parties(parties, program, seed=seed, timeout=TIMEOUT):
        assert sign.shape == same.shape == same_small.shape == (0,)
        assert planes.shape == (8, 0)


@PARTY_COUNTS
def test_bits_to_arithmetic_of_empty_planes(parties: int) -> None:
    """Zero rows: zero words per plane; the result should be ``(k, 0)``, as for any other size."""
    planes = np.zeros((3, 0), dtype=np.uint64)
    results = run_parties(
        parties, lambda party: bits_to_arithmetic(party, planes, 0), seed=1, timeout=TIMEOUT
    )
    assert all(result.shape == (3, 0) for result in results)
