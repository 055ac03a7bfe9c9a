"""Tests for tally.mpc.shuffle: the output is the input's rows, kept together, in a new order."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from tally.mpc.party import Party
from tally.mpc.shuffle import shuffle_columns
from tally.mpc.simulate import run_parties

PARTY_COUNTS = pytest.mark.parametrize("parties", [2, 3, 5])
TUPLE_SOURCES = pytest.mark.parametrize("seed", [2024, None], ids=["seeded-dealer", "os-dealer"])
TIMEOUT = 60.0


def share_columns(table: np.ndarray, kinds: str, parties: int, seed: int = 0) -> list[np.ndarray]:
    """Shares of a ``(rows, width)`` table: additive for 'a' columns, XOR for 'x' columns."""
    rng = np.random.default_rng(seed)
    xor = np.array([kind == "x" for kind in kinds], dtype=bool)
    shares = [rng.integers(0, 2**64, size=table.shape, dtype=np.uint64) for _ in range(parties - 1)]
    last = np.array(table, dtype=np.uint64, copy=True)
    for other in shares:
        last = np.where(xor, last ^ other, last - other)
    return [*shares, last]


def reconstruct_columns(shares: list[np.ndarray], kinds: str) -> np.ndarray:
    xor = np.array([kind == "x" for kind in kinds], dtype=bool)
    total = shares[0].copy()
    for other in shares[1:]:
        total = np.where(xor, total ^ other, total + other)
    return total


def numbered_table(rows: int, width: int, seed: int) -> np.ndarray:
    """Column 0 numbers the rows; the other columns are random words (and a few equal ones)."""
    rng = np.random.default_rng(seed)
    table = rng.integers(0, 2**64, size=(rows, width), dtype=np.uint64)
    table[:, 0] = np.arange(rows, dtype=np.uint64)
    if width > 1 and rows > 2:
        table[:2, 1] = 0  # duplicate values within a column must not confuse anything
    return table


def run_shuffle(
    table: np.ndarray, kinds: str, parties: int, seed: int | None
) -> tuple[np.ndarray, list[tuple[int, int]]]:
    shared = share_columns(table, kinds, parties)

    def program(party: Party) -> tuple[np.ndarray, int, int]:
        shuffled = shuffle_columns(party, shared[party.id], kinds)
        return shuffled, party.transport.rounds, party.transport.bytes_sent

    results = run_parties(parties, program, seed=seed, timeout=TIMEOUT)
    shuffled = reconstruct_columns([r[0] for r in results], kinds)
    return shuffled, [(r[1], r[2]) for r in results]


def assert_is_row_permutation(shuffled: np.ndarray, table: np.ndarray) -> np.ndarray:
    """The rows of ``shuffled`` are exactly the rows of ``table``; returns the permutation."""
    assert shuffled.shape == table.shape
    permutation = shuffled[:, 0].astype(np.int64)
    np.testing.assert_array_equal(np.sort(permutation), np.arange(table.shape[0]))
    np.testing.assert_array_equal(shuffled, table[permutation])  # rows kept together
    return permutation


@PARTY_COUNTS
@TUPLE_SOURCES
@pytest.mark.parametrize("kinds", ["a", "x", "aaa", "xxx", "axa", "xaax"])
def test_shuffle_permutes_rows_of_mixed_columns(parties: int, seed: int | None, kinds: str) -> None:
    table = numbered_table(500, len(kinds), seed=len(kinds))
    shuffled, counters = run_shuffle(table, kinds, parties, seed)
    permutation = assert_is_row_permutation(shuffled, table)
    assert not np.array_equal(permutation, np.arange(500))
    for rounds, sent in counters:
        assert rounds == parties
        assert sent == 8 * table.size * (parties - 1)


@PARTY_COUNTS
def test_shuffle_of_ten_thousand_rows_moves_almost_every_row(parties: int) -> None:
    rows = 10_000
    table = numbered_table(rows, 3, seed=parties)
    shuffled, _ = run_shuffle(table, "axa", parties, seed=None)
    permutation = assert_is_row_permutation(shuffled, table)
    fixed_points = int(np.count_nonzero(permutation == np.arange(rows)))
    assert fixed_points < 15  # a uniform permutation has 1 on average (Poisson(1))


@PARTY_COUNTS
@TUPLE_SOURCES
def test_shuffles_in_sequence_use_fresh_permutations(parties: int, seed: int | None) -> None:
    table = numbered_table(300, 2, seed=9)
    shared = share_columns(table, "ax", parties)

    def program(party: Party) -> tuple[np.ndarray, np.ndarray]:
        once = shuffle_columns(party, shared[party.id], "ax")
        return once, shuffle_columns(party, once, "ax")

    results = run_parties(parties, program, seed=seed, timeout=TIMEOUT)
    once = reconstruct_columns([r[0] for r in results], "ax")
    twice = reconstruct_columns([r[1] for r in results], "ax")
    first = assert_is_row_permutation(once, table)
    second = assert_is_row_permutation(twice, table)
    assert not np.array_equal(first, second)


@PARTY_COUNTS
@TUPLE_SOURCES
@given(
    rows=st.integers(0, 70),
    kinds=st.text(alphabet="ax", min_size=1, max_size=4),
    salt=st.integers(0, 2**16),
)
@example(rows=0, kinds="ax", salt=0)
@example(rows=1, kinds="xa", salt=0)
def test_shuffle_property(parties: int, seed: int | None, rows: int, kinds: str, salt: int) -> None:
    table = numbered_table(rows, len(kinds), seed=salt)
    table[:, 1:][table[:, 1:] % np.uint64(3) == 0] = np.uint64(2**64 - 1)  # some extreme words
    shuffled, _ = run_shuffle(table, kinds, parties, seed)
    assert_is_row_permutation(shuffled, table)


@PARTY_COUNTS
def test_shuffle_defaults_to_additive_columns(parties: int) -> None:
    table = numbered_table(100, 2, seed=4)
    shared = share_columns(table, "aa", parties)
    results = run_parties(parties, lambda party: shuffle_columns(party, shared[party.id]), seed=3)
    assert_is_row_permutation(reconstruct_columns(results, "aa"), table)


@PARTY_COUNTS
def test_shuffle_needs_one_kind_per_column(parties: int) -> None:
    table = np.zeros((4, 2), dtype=np.uint64)
    with pytest.raises(ValueError, match="one kind per column"):
        run_parties(parties, lambda party: shuffle_columns(party, table, "a"), seed=1)
    with pytest.raises(ValueError, match="'a'"):
        run_parties(parties, lambda party: shuffle_columns(party, table, "ay"), seed=1)
