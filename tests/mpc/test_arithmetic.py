"""Tests for tally.mpc.arithmetic: opening and Beaver multiplication, checked against numpy."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from tally.mpc.arithmetic import add_public, multiply, open_values, public_to_shares
from tally.mpc.opening import IN_TURN_MIN_ELEMENTS
from tally.mpc.party import Party
from tally.mpc.ring import decode_int, encode_int, reconstruct, split
from tally.mpc.simulate import run_parties

LARGEST = 2**62 - 1
EDGE_INTS = [0, 1, -1, LARGEST, -LARGEST]
PARTY_COUNTS = pytest.mark.parametrize("parties", [2, 3, 5])
TUPLE_SOURCES = pytest.mark.parametrize("seed", [2024, None], ids=["seeded-dealer", "os-dealer"])
ring_ints = st.integers(-LARGEST, LARGEST)
TIMEOUT = 60.0


def share(values: np.ndarray, parties: int, seed: int = 0) -> list[np.ndarray]:
    """Additive shares of already-encoded values."""
    return split(np.asarray(values, dtype=np.uint64), parties, np.random.default_rng(seed))


def words(shape: int | tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2**64, size=shape, dtype=np.uint64)


@PARTY_COUNTS
@TUPLE_SOURCES
def test_open_values_reveals_every_vector(parties: int, seed: int | None) -> None:
    secrets = [words(100, 1), words((3, 4), 2), np.zeros(0, np.uint64), words(1, 3)]
    shared = [share(secret, parties, index) for index, secret in enumerate(secrets)]

    def program(party: Party) -> list[np.ndarray]:
        return open_values(party, [shares[party.id] for shares in shared])

    for opened in run_parties(parties, program, seed=seed, timeout=TIMEOUT):
        assert len(opened) == len(secrets)
        for value, secret in zip(opened, secrets, strict=True):
            assert value.dtype == np.uint64 and value.shape == secret.shape
            np.testing.assert_array_equal(value, secret)


@PARTY_COUNTS
def test_open_values_costs_one_round_and_eight_bytes_per_element(parties: int) -> None:
    shared = share(words(50, 4), parties)

    def program(party: Party) -> tuple[int, int]:
        open_values(party, [shared[party.id], shared[party.id][:10]])
        return party.transport.rounds, party.transport.bytes_sent

    for rounds, sent in run_parties(parties, program, seed=1, timeout=TIMEOUT):
        assert rounds == 1
        assert sent == 8 * 60 * (parties - 1)


@PARTY_COUNTS
def test_long_vectors_are_opened_through_each_party_in_turn(parties: int) -> None:
    size = IN_TURN_MIN_ELEMENTS + 1001  # not a multiple of the party count
    secrets = [words(size - 7, 5), words((7,), 6)]
    shared = [share(secret, parties, index) for index, secret in enumerate(secrets)]

    def program(party: Party) -> tuple[list[np.ndarray], int, int]:
        opened = open_values(party, [shares[party.id] for shares in shared])
        return opened, party.transport.rounds, party.transport.bytes_sent

    results = run_parties(parties, program, seed=1, timeout=TIMEOUT)
    pieces = [size * (k + 1) // parties - size * k // parties for k in range(parties)]
    for index, (opened, rounds, sent) in enumerate(results):
        for value, secret in zip(opened, secrets, strict=True):
            np.testing.assert_array_equal(value, secret)
        if parties < 3:  # in turn would save nothing: broadcast
            assert rounds == 1 and sent == 8 * size * (parties - 1)
        else:  # every share but one's own piece, then one's piece to every peer
            assert rounds == 2
            assert sent == 8 * (size - pieces[index]) + 8 * pieces[index] * (parties - 1)
            assert sent < 8 * size * (parties - 1) * 0.7


@PARTY_COUNTS
def test_open_nothing(parties: int) -> None:
    results = run_parties(parties, lambda party: open_values(party, []), seed=1, timeout=TIMEOUT)
    assert results == [[]] * parties


@PARTY_COUNTS
@TUPLE_SOURCES
def test_multiply_batched_pairs_matches_numpy(parties: int, seed: int | None) -> None:
    shapes = [(200,), (0,), (1,), (4, 5)]
    lefts = [words(shape, 10 + i) for i, shape in enumerate(shapes)]
    rights = [words(shape, 20 + i) for i, shape in enumerate(shapes)]
    shared_left = [share(v, parties, 1) for v in lefts]
    shared_right = [share(v, parties, 2) for v in rights]

    def program(party: Party) -> tuple[list[np.ndarray], int, int]:
        pairs = [(x[party.id], y[party.id]) for x, y in zip(shared_left, shared_right, strict=True)]
        products = multiply(party, pairs)
        return products, party.transport.rounds, party.transport.bytes_sent

    results = run_parties(parties, program, seed=seed, timeout=TIMEOUT)
    elements = sum(int(np.prod(shape)) for shape in shapes)
    for _, rounds, sent in results:
        assert rounds == 1
        assert sent == 16 * elements * (parties - 1)
    for index, (left, right) in enumerate(zip(lefts, rights, strict=True)):
        product = reconstruct([products[index] for products, _, _ in results])
        assert product.shape == left.shape
        np.testing.assert_array_equal(product, left * right)  # numpy uint64 wraps mod 2^64


@PARTY_COUNTS
def test_multiply_nothing(parties: int) -> None:
    assert run_parties(parties, lambda party: multiply(party, []), seed=1) == [[]] * parties


@PARTY_COUNTS
@TUPLE_SOURCES
@given(
    pairs=st.lists(st.tuples(ring_ints, ring_ints), max_size=40),
)
@example(pairs=[(a, b) for a in EDGE_INTS for b in EDGE_INTS])
@example(pairs=[])
@example(pairs=[(LARGEST, -LARGEST)])
def test_multiply_signed_integers_property(
    parties: int, seed: int | None, pairs: list[tuple[int, int]]
) -> None:
    left = np.array([a for a, _ in pairs], dtype=np.int64)
    right = np.array([b for _, b in pairs], dtype=np.int64)
    shared_left, shared_right = (
        share(encode_int(left), parties, 1),
        share(encode_int(right), parties, 2),
    )

    def program(party: Party) -> np.ndarray:
        (product,) = multiply(party, [(shared_left[party.id], shared_right[party.id])])
        return product

    product = reconstruct(run_parties(parties, program, seed=seed, timeout=TIMEOUT))
    np.testing.assert_array_equal(decode_int(product), left * right)  # int64 wraps like Z_2^64


@PARTY_COUNTS
@TUPLE_SOURCES
def test_chained_products_use_fresh_triples(parties: int, seed: int | None) -> None:
    values = np.array([3, -2, 7, 0, 1, -LARGEST], dtype=np.int64)
    shared = share(encode_int(values), parties)

    def program(party: Party) -> np.ndarray:
        square = multiply(party, [(shared[party.id], shared[party.id])])[0]
        (cube,) = multiply(party, [(square, shared[party.id])])
        return cube

    cube = reconstruct(run_parties(parties, program, seed=seed, timeout=TIMEOUT))
    np.testing.assert_array_equal(decode_int(cube), values * values * values)


@PARTY_COUNTS
def test_public_constants(parties: int) -> None:
    secret = encode_int(np.array(EDGE_INTS, dtype=np.int64))
    constant = encode_int(np.array([5, -5, 0, -1, 1], dtype=np.int64))
    shared = share(secret, parties)

    def program(party: Party) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        shifted = add_public(party, shared[party.id], constant)
        by_scalar = add_public(party, shared[party.id], 9)
        trivial = public_to_shares(party, constant)
        return shifted, by_scalar, trivial

    results = run_parties(parties, program, seed=3, timeout=TIMEOUT)
    np.testing.assert_array_equal(reconstruct([r[0] for r in results]), secret + constant)
    np.testing.assert_array_equal(reconstruct([r[1] for r in results]), secret + np.uint64(9))
    np.testing.assert_array_equal(reconstruct([r[2] for r in results]), constant)
    for party_id, (_, _, trivial) in enumerate(results):
        if party_id:
            np.testing.assert_array_equal(trivial, 0)
