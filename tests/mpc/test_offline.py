"""Tests for tally.mpc.offline: every hm3 tuple type satisfies its relation once reconstructed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from tally.mpc.bits import from_planes, unpack_lanes, word_count
from tally.mpc.offline import Hm3Generator, Hm3Source, SetupError, ShakePrf, agree_keys
from tally.mpc.offline.hm3 import _combine_into, _frame, _permutation
from tally.mpc.offline.prf import Prf
from tally.mpc.offline.replicated import PairKeys
from tally.mpc.ring import column_runs, reconstruct
from tally.mpc.simulate import run_transports
from tally.mpc.transport import Transport
from tally.mpc.tuples import HelperShare, PermuterShare

TIMEOUT = 60.0


def run_three(program: Callable[[Transport], Any], parties: int = 3) -> list[Any]:
    """``program(transport)`` at each party in its own thread; re-raise the first error."""
    return run_transports(parties, program, TIMEOUT)


def sources(request: Callable[[Hm3Source], Any]) -> list[Any]:
    return run_three(lambda transport: request(Hm3Source(transport)))


def xor_reconstruct(shares: list[np.ndarray]) -> np.ndarray:
    combined: np.ndarray = np.bitwise_xor.reduce(np.stack(shares), axis=0)
    return combined


@pytest.mark.parametrize("count", [0, 1, 1000])
def test_triples_multiply(count: int) -> None:
    shares = sources(lambda source: source.triples(count))
    a, b, c = (reconstruct([share[k] for share in shares]) for k in range(3))
    assert a.shape == b.shape == c.shape == (count,)
    np.testing.assert_array_equal(c, a * b)
    if count > 100:
        assert len(np.unique(a)) == count
        assert len(np.unique(shares[0][0])) == count


def test_bit_triples_and() -> None:
    shares = sources(lambda source: source.bit_triples(40))
    a, b, c = (xor_reconstruct([share[k] for share in shares]) for k in range(3))
    np.testing.assert_array_equal(c, a & b)
    ones = sum(bin(int(word)).count("1") for word in a)
    assert 0.4 < ones / (64 * 40) < 0.6


@pytest.mark.parametrize("count", [1, 2, 64, 130, 3000])
def test_dabits_agree_in_both_sharings(count: int) -> None:
    shares = sources(lambda source: source.dabits(count))
    arithmetic = reconstruct([arith for arith, _ in shares])
    binary = xor_reconstruct([packed for _, packed in shares])
    assert arithmetic.shape == (count,) and binary.shape == (word_count(count),)
    assert set(np.unique(arithmetic).tolist()) <= {0, 1}
    np.testing.assert_array_equal(unpack_lanes(binary, count), arithmetic)
    if count >= 3000:
        assert 0.45 < arithmetic.mean() < 0.55


@pytest.mark.parametrize("width", [1, 2, 8, 33, 63, 64])
def test_edabits_value_equals_its_bits(width: int) -> None:
    count = 500
    shares = sources(lambda source: source.edabits(count, width))
    value = reconstruct([arith for arith, _ in shares])
    planes = xor_reconstruct([planes for _, planes in shares])
    assert planes.shape == (width, word_count(count))
    np.testing.assert_array_equal(from_planes(planes, count), value)
    if width < 64:
        assert int(value.max()) < 2**width
    assert int(value.max()) >= 2 ** (width - 1)
    if width >= 33:
        assert len(np.unique(value)) == count


@pytest.mark.parametrize("kinds", ["a", "x", "axxa"])
@pytest.mark.parametrize("rows", [0, 1, 50])
def test_shuffle_correlation_reconstructs(kinds: str, rows: int) -> None:
    """For each step j: Delta_j = pi_j(sum of masks) + sum of outputs, per column kind."""
    shares = sources(lambda source: source.shuffle(rows, kinds))
    xor = np.array([k == "x" for k in kinds], dtype=bool)
    permutations = []
    for step in range(3):
        parts = [shares[p][step] for p in range(3)]
        permuter = parts[step]
        assert isinstance(permuter, PermuterShare)
        helpers = [parts[p] for p in range(3) if p != step]
        assert all(isinstance(h, HelperShare) for h in helpers)
        masks = [h.mask for h in helpers if isinstance(h, HelperShare)]
        outputs = [h.output for h in helpers if isinstance(h, HelperShare)]
        mask_total = np.where(xor, masks[0] ^ masks[1], masks[0] + masks[1])
        output_total = np.where(xor, outputs[0] ^ outputs[1], outputs[0] + outputs[1])
        moved = mask_total[permuter.permutation]
        expected = np.where(xor, moved ^ output_total, moved + output_total)
        np.testing.assert_array_equal(permuter.delta, expected)
        assert sorted(permuter.permutation.tolist()) == list(range(rows))
        permutations.append(permuter.permutation)
    if rows >= 50:
        assert len({tuple(p.tolist()) for p in permutations}) == 3


def test_each_permutation_is_known_to_its_permuter_and_the_next_party_only() -> None:
    def program(transport: Transport) -> list[np.ndarray]:
        keys = agree_keys(transport, ShakePrf())
        generator = Hm3Generator(keys, transport)
        correlation = generator.shuffle(b"s", 40, "a")
        permuter = correlation[transport.party]
        assert isinstance(permuter, PermuterShare)
        # The co-knower can rebuild pi_j for j = party - 1 from its own key k_party.
        j = (transport.party - 1) % 3
        rebuilt = _permutation(keys, j + 1, _frame(b"s") + b"/pi" + str(j).encode(), 40)
        return [permuter.permutation, rebuilt]

    results = run_three(program)
    for party in range(3):
        np.testing.assert_array_equal(results[(party + 1) % 3][1], results[party][0])


def test_input_masks_are_independent_per_party_and_batch() -> None:
    shares = sources(lambda source: (source.input_masks(100), source.input_masks(100)))
    first = [s[0] for s in shares]
    second = [s[1] for s in shares]
    for party in range(3):
        assert not np.array_equal(first[party], second[party])
    assert len(np.unique(np.concatenate(first))) == 300


def test_each_batch_is_fresh() -> None:
    shares = sources(lambda source: (source.triples(50), source.triples(50)))
    for party in range(3):
        assert not np.array_equal(shares[party][0][0], shares[party][1][0])


def test_the_three_parties_hold_different_shares_of_every_value() -> None:
    shares = sources(lambda source: source.triples(200))
    for k in range(3):
        for left in range(3):
            for right in range(left + 1, 3):
                assert not np.array_equal(shares[left][k], shares[right][k])


def test_triples_bit_triples_shuffles_and_masks_send_nothing() -> None:
    def program(transport: Transport) -> int:
        source = Hm3Source(transport)
        before = transport.bytes_sent
        source.triples(1000)
        source.bit_triples(100)
        source.shuffle(100, "ax")
        source.input_masks(100)
        return transport.bytes_sent - before

    assert run_three(program) == [0, 0, 0]


def test_dabits_and_edabits_communication_per_tuple() -> None:
    count = 3 * 64 * 50

    def program(transport: Transport) -> tuple[int, int, int]:
        source = Hm3Source(transport)
        start = transport.bytes_sent
        source.dabits(count)
        after_dabits = transport.bytes_sent
        source.edabits(count, 64)
        after_edabits = transport.bytes_sent
        source.edabits(count, 16)
        return (
            after_dabits - start,
            after_edabits - after_dabits,
            transport.bytes_sent - after_edabits,
        )

    for dabit_bytes, edabit_bytes, narrow_bytes in run_three(program):
        assert dabit_bytes == count * 8 // 3  # 8/3 bytes per daBit per party
        assert edabit_bytes == 125 * count // 8  # 125 AND gates at one bit each
        assert narrow_bytes == 31 * count // 8 + 2 * count * 8 // 3


def test_key_agreement_needs_three_parties() -> None:
    with pytest.raises(SetupError, match="exactly 3 parties"):
        run_three(lambda transport: agree_keys(transport, ShakePrf()), parties=2)


def test_keys_never_show_in_repr() -> None:
    keys = run_three(lambda transport: agree_keys(transport, ShakePrf()))
    for party_keys in keys:
        assert party_keys.own.hex() not in repr(party_keys)
        assert "own" not in repr(party_keys)


def test_key_pairs_line_up_around_the_ring() -> None:
    keys = run_three(lambda transport: agree_keys(transport, ShakePrf()))
    for party in range(3):
        assert keys[party].next == keys[(party + 1) % 3].own
        assert len({keys[p].private for p in range(3)}) == 3


class CountingPrf(Prf):
    """A PRF that counts its output, to check a pluggable PRF is used for everything."""

    name = "counting"

    def __init__(self) -> None:
        self.inner = ShakePrf()
        self.words_out = 0

    def expand(self, key: bytes, label: bytes, size: int) -> bytes:
        self.words_out += size // 8
        return self.inner.expand(key, label, size)


def test_a_plugged_in_prf_generates_everything() -> None:
    prfs = [CountingPrf() for _ in range(3)]

    def program(transport: Transport) -> tuple[np.ndarray, ...]:
        source = Hm3Source(transport, prf=prfs[transport.party])
        return source.triples(10)

    shares = run_three(program)
    a, b, c = (reconstruct([share[k] for share in shares]) for k in range(3))
    np.testing.assert_array_equal(c, a * b)
    assert all(prf.words_out == 100 for prf in prfs)  # 10 PRF words per triple


def test_a_generator_without_transport_refuses_dabits() -> None:
    keys = run_three(lambda transport: agree_keys(transport, ShakePrf()))
    generator = Hm3Generator(keys[0])
    with pytest.raises(ValueError, match="need a transport"):
        generator.dabits(b"x", 10)
    a, _, _ = generator.triples(b"t", 3)
    assert a.shape == (3,)


class RepeatingPrf(ShakePrf):
    """SHAKE words with every word drawn twice in a row: sort keys with ties."""

    def words(self, key: bytes, label: bytes, count: int) -> np.ndarray:
        return np.repeat(super().words(key, label, (count + 1) // 2), 2)[:count]


class ConstantPrf(ShakePrf):
    """Every word is the same: the worst case of ties."""

    def words(self, key: bytes, label: bytes, count: int) -> np.ndarray:
        return np.full(count, 7, dtype=np.uint64)


def plain_keys(prf: Prf) -> PairKeys:
    return PairKeys(0, bytes(16), bytes(range(16)), bytes(range(16, 32)), prf)


@pytest.mark.parametrize("rows", [0, 1, 2, 3, 17, 1000, 100_000])
def test_the_quick_permutation_is_the_stable_argsort_of_distinct_keys(rows: int) -> None:
    keys = plain_keys(ShakePrf())
    words = keys.words(1, b"pi", rows)
    assert len(np.unique(words)) == rows  # distinct: the quick path, no fallback
    permutation = _permutation(keys, 1, b"pi", rows)
    assert permutation.dtype == np.int64
    np.testing.assert_array_equal(permutation, np.argsort(words, kind="stable"))


@pytest.mark.parametrize("prf", [RepeatingPrf(), ConstantPrf()], ids=["pairs", "constant"])
@pytest.mark.parametrize("rows", [2, 3, 64, 5001])
def test_repeated_keys_fall_back_to_the_stable_argsort(prf: Prf, rows: int) -> None:
    keys = plain_keys(prf)
    words = keys.words(1, b"pi", rows)
    assert len(np.unique(words)) < rows
    permutation = _permutation(keys, 1, b"pi", rows)
    assert permutation.dtype == np.int64
    np.testing.assert_array_equal(permutation, np.argsort(words, kind="stable"))


@pytest.mark.parametrize("kinds", ["a", "x", "axa", "xax", "aaxaaa"])
@pytest.mark.parametrize("subtract", [False, True])
def test_combining_columns_in_place_matches_the_where_form(kinds: str, subtract: bool) -> None:
    rng = np.random.default_rng(len(kinds) + subtract)
    shape = (257, len(kinds))
    left = rng.integers(0, 2**64, shape, dtype=np.uint64)
    right = rng.integers(0, 2**64, shape, dtype=np.uint64)
    xor = np.array([k == "x" for k in kinds], dtype=bool)
    expected = np.where(xor, left ^ right, left - right if subtract else left + right)
    kept = right.copy()
    combined = _combine_into(left, right, column_runs(kinds), subtract=subtract)
    assert combined is left
    np.testing.assert_array_equal(combined, expected)
    np.testing.assert_array_equal(right, kept)
