"""Tests for tally.mpc.boolean: XOR opening and AND on packed words, checked against numpy."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from tally.mpc.boolean import and_words, not_words, open_bits, xor_public
from tally.mpc.opening import IN_TURN_MIN_ELEMENTS
from tally.mpc.party import Party
from tally.mpc.simulate import run_parties

PARTY_COUNTS = pytest.mark.parametrize("parties", [2, 3, 5])
TUPLE_SOURCES = pytest.mark.parametrize("seed", [2024, None], ids=["seeded-dealer", "os-dealer"])
ALL_ONES = 2**64 - 1
EDGE_WORDS = [0, 1, ALL_ONES, 2**63, 2**62 - 1, 2**64 - 2**62 + 1, 0x5555555555555555]
TIMEOUT = 60.0


def words(shape: int | tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2**64, size=shape, dtype=np.uint64)


def xor_share(secret: np.ndarray, parties: int, seed: int = 0) -> list[np.ndarray]:
    """XOR shares: parties - 1 random words and the secret XOR all of them."""
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


@PARTY_COUNTS
def test_long_xor_vectors_are_opened_through_each_party_in_turn(parties: int) -> None:
    secret = words(IN_TURN_MIN_ELEMENTS + 5, 3)
    shared = xor_share(secret, parties, 4)

    def program(party: Party) -> tuple[np.ndarray, int]:
        (opened,) = open_bits(party, [shared[party.id]])
        return opened, party.transport.rounds

    for opened, rounds in run_parties(parties, program, seed=1, timeout=TIMEOUT):
        np.testing.assert_array_equal(opened, secret)
        assert rounds == (2 if parties >= 3 else 1)


@PARTY_COUNTS
@TUPLE_SOURCES
def test_open_bits_reveals_every_vector(parties: int, seed: int | None) -> None:
    secrets = [words(10, 1), words((2, 7), 2), np.zeros(0, np.uint64)]
    shared = [xor_share(secret, parties, index) for index, secret in enumerate(secrets)]

    def program(party: Party) -> tuple[list[np.ndarray], int, int]:
        opened = open_bits(party, [shares[party.id] for shares in shared])
        return opened, party.transport.rounds, party.transport.bytes_sent

    for opened, rounds, sent in run_parties(parties, program, seed=seed, timeout=TIMEOUT):
        assert rounds == 1 and sent == 8 * 24 * (parties - 1)
        for value, secret in zip(opened, secrets, strict=True):
            assert value.shape == secret.shape
            np.testing.assert_array_equal(value, secret)


@PARTY_COUNTS
@TUPLE_SOURCES
def test_and_words_batched_pairs_match_numpy(parties: int, seed: int | None) -> None:
    shapes = [(40,), (0,), (1,), (3, 6)]
    lefts = [words(shape, 30 + i) for i, shape in enumerate(shapes)]
    rights = [words(shape, 40 + i) for i, shape in enumerate(shapes)]
    shared_left = [xor_share(v, parties, 1) for v in lefts]
    shared_right = [xor_share(v, parties, 2) for v in rights]

    def program(party: Party) -> tuple[list[np.ndarray], int, int]:
        pairs = [(x[party.id], y[party.id]) for x, y in zip(shared_left, shared_right, strict=True)]
        return and_words(party, pairs), party.transport.rounds, party.transport.bytes_sent

    results = run_parties(parties, program, seed=seed, timeout=TIMEOUT)
    total_words = sum(int(np.prod(shape)) for shape in shapes)
    for _, rounds, sent in results:
        assert rounds == 1 and sent == 16 * total_words * (parties - 1)
    for index, (left, right) in enumerate(zip(lefts, rights, strict=True)):
        product = xor_reconstruct([products[index] for products, _, _ in results])
        assert product.shape == left.shape
        np.testing.assert_array_equal(product, left & right)


@PARTY_COUNTS
def test_and_nothing(parties: int) -> None:
    assert run_parties(parties, lambda party: and_words(party, []), seed=1) == [[]] * parties


@PARTY_COUNTS
@TUPLE_SOURCES
@given(st.lists(st.tuples(st.integers(0, ALL_ONES), st.integers(0, ALL_ONES)), max_size=30))
@example([(a, b) for a in EDGE_WORDS for b in EDGE_WORDS])
@example([])
def test_and_words_property(parties: int, seed: int | None, pairs: list[tuple[int, int]]) -> None:
    left = np.array([a for a, _ in pairs], dtype=np.uint64)
    right = np.array([b for _, b in pairs], dtype=np.uint64)
    shared_left, shared_right = xor_share(left, parties, 1), xor_share(right, parties, 2)

    def program(party: Party) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        (conjunction,) = and_words(party, [(shared_left[party.id], shared_right[party.id])])
        exclusive = shared_left[party.id] ^ shared_right[party.id]  # XOR is local
        return conjunction, exclusive, not_words(party, shared_left[party.id])

    results = run_parties(parties, program, seed=seed, timeout=TIMEOUT)
    np.testing.assert_array_equal(xor_reconstruct([r[0] for r in results]), left & right)
    np.testing.assert_array_equal(xor_reconstruct([r[1] for r in results]), left ^ right)
    np.testing.assert_array_equal(xor_reconstruct([r[2] for r in results]), ~left)


@PARTY_COUNTS
def test_xor_public_applies_the_constant_once(parties: int) -> None:
    secret = words(8, 5)
    constant = words(8, 6)
    shared = xor_share(secret, parties)

    def program(party: Party) -> np.ndarray:
        return xor_public(party, shared[party.id], constant)

    results = run_parties(parties, program, seed=1, timeout=TIMEOUT)
    np.testing.assert_array_equal(xor_reconstruct(results), secret ^ constant)
