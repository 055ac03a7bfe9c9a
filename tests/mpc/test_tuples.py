"""Tests for tally.mpc.tuples: every kind of dealt tuple satisfies its relation, once only."""

from __future__ import annotations

import numpy as np
import pytest

from tally.mpc.bits import from_planes, unpack_lanes, word_count
from tally.mpc.ring import reconstruct
from tally.mpc.tuples import Dealer, DealerSource, HelperShare, PermuterShare, TupleReuseError

PARTY_COUNTS = pytest.mark.parametrize("parties", [2, 3, 5])
DEALER_SEEDS = pytest.mark.parametrize("seed", [2024, None], ids=["seeded-dealer", "os-dealer"])


def sources(parties: int, seed: int | None) -> list[DealerSource]:
    dealer = Dealer(parties, seed=seed)
    return [dealer.source(party) for party in range(parties)]


def xor_reconstruct(shares: list[np.ndarray]) -> np.ndarray:
    combined: np.ndarray = np.bitwise_xor.reduce(np.stack(shares), axis=0)
    return combined


@PARTY_COUNTS
@DEALER_SEEDS
@pytest.mark.parametrize("count", [0, 1, 500])
def test_beaver_triples_multiply(parties: int, seed: int | None, count: int) -> None:
    shares = [source.triples(count) for source in sources(parties, seed)]
    a, b, c = (reconstruct([share[k] for share in shares]) for k in range(3))
    assert a.shape == b.shape == c.shape == (count,)
    np.testing.assert_array_equal(c, a * b)
    if count > 100:
        assert len(np.unique(a)) == count  # uniform 64-bit values do not repeat


@PARTY_COUNTS
@DEALER_SEEDS
def test_bit_triples_and(parties: int, seed: int | None) -> None:
    shares = [source.bit_triples(40) for source in sources(parties, seed)]
    a, b, c = (xor_reconstruct([share[k] for share in shares]) for k in range(3))
    np.testing.assert_array_equal(c, a & b)
    ones = sum(bin(int(word)).count("1") for word in a)
    assert 0.4 < ones / (64 * 40) < 0.6


@PARTY_COUNTS
@DEALER_SEEDS
@pytest.mark.parametrize("count", [1, 64, 130, 2000])
def test_dabits_agree_in_both_sharings(parties: int, seed: int | None, count: int) -> None:
    shares = [source.dabits(count) for source in sources(parties, seed)]
    arithmetic = reconstruct([arith for arith, _ in shares])
    binary = xor_reconstruct([packed for _, packed in shares])
    assert arithmetic.shape == (count,) and binary.shape == (word_count(count),)
    assert set(np.unique(arithmetic).tolist()) <= {0, 1}
    np.testing.assert_array_equal(unpack_lanes(binary, count), arithmetic)
    if count >= 2000:
        assert 0.4 < arithmetic.mean() < 0.6


@PARTY_COUNTS
@DEALER_SEEDS
@pytest.mark.parametrize("width", [1, 8, 33, 64])
def test_edabits_value_equals_its_bits(parties: int, seed: int | None, width: int) -> None:
    count = 300
    shares = [source.edabits(count, width) for source in sources(parties, seed)]
    value = reconstruct([arith for arith, _ in shares])
    planes = xor_reconstruct([planes for _, planes in shares])
    assert planes.shape == (width, word_count(count))
    np.testing.assert_array_equal(from_planes(planes, count), value)
    if width < 64:
        assert int(value.max()) < 2**width
    assert int(value.max()) >= 2 ** (width - 1)  # the top bit is used


@PARTY_COUNTS
@DEALER_SEEDS
@pytest.mark.parametrize("kinds", ["a", "x", "axxa"])
def test_shuffle_correlation(parties: int, seed: int | None, kinds: str) -> None:
    rows = 200
    shares = [source.shuffle(rows, kinds) for source in sources(parties, seed)]
    xor = np.array([kind == "x" for kind in kinds], dtype=bool)

    def combine(left: np.ndarray, right: np.ndarray) -> np.ndarray:
        combined: np.ndarray = np.where(xor, left ^ right, left + right)
        return combined

    permutations = []
    for permuter in range(parties):
        step = [shares[party][permuter] for party in range(parties)]
        mine = step[permuter]
        assert isinstance(mine, PermuterShare)
        helpers = [part for party, part in enumerate(step) if party != permuter]
        assert all(isinstance(part, HelperShare) for part in helpers)
        masks = np.zeros((rows, len(kinds)), dtype=np.uint64)
        outputs = np.zeros((rows, len(kinds)), dtype=np.uint64)
        for helper in helpers:
            assert isinstance(helper, HelperShare)
            assert helper.mask.shape == helper.output.shape == (rows, len(kinds))
            masks, outputs = combine(masks, helper.mask), combine(outputs, helper.output)
        np.testing.assert_array_equal(np.sort(mine.permutation), np.arange(rows))
        # delta_j = perm_j(sum a_i) + sum b_i (XOR in place of + for 'x' columns)
        np.testing.assert_array_equal(mine.delta, combine(masks[mine.permutation], outputs))
        permutations.append(mine.permutation)
    assert len({permutation.tobytes() for permutation in permutations}) == parties


@PARTY_COUNTS
@DEALER_SEEDS
def test_input_masks_are_shares_of_random_values(parties: int, seed: int | None) -> None:
    shares = [source.input_masks(100) for source in sources(parties, seed)]
    assert all(share.shape == (100,) and share.dtype == np.uint64 for share in shares)
    assert len(np.unique(reconstruct(shares))) == 100


# -- one use per tuple ------------------------------------------------------------------


def test_take_refuses_a_batch_already_handed_out() -> None:
    dealer = Dealer(2, seed=1)
    dealer.take(0, 0, "triples", (4,))
    with pytest.raises(TupleReuseError, match="already handed"):
        dealer.take(0, 0, "triples", (4,))
    dealer.take(1, 0, "triples", (4,))
    with pytest.raises(TupleReuseError, match="already handed"):
        dealer.take(1, 0, "triples", (4,))


def test_take_refuses_a_batch_out_of_order() -> None:
    dealer = Dealer(3, seed=1)
    with pytest.raises(TupleReuseError, match="before batch 0"):
        dealer.take(0, 1, "triples", (4,))
    assert dealer.cursor(0) == 0


def test_old_batch_raises_even_after_every_party_took_it() -> None:
    dealer = Dealer(2)
    for party in (0, 1):
        dealer.take(party, 0, "dabits", (10,))
        dealer.take(party, 1, "triples", (3,))
    for party in (0, 1):
        for batch in (0, 1):
            with pytest.raises(TupleReuseError):
                dealer.take(party, batch, "triples", (3,))
    assert dealer.cursor(0) == dealer.cursor(1) == 2


@pytest.mark.parametrize(
    "first, second",
    [
        (("triples", (4,)), ("bit_triples", (4,))),
        (("triples", (4,)), ("triples", (5,))),
        (("edabits", (10, 64)), ("edabits", (10, 8))),
        (("shuffle", (5, "ax")), ("shuffle", (5, "xa"))),
    ],
)
def test_parties_out_of_step_raise(
    first: tuple[str, tuple[int | str, ...]], second: tuple[str, tuple[int | str, ...]]
) -> None:
    dealer = Dealer(3, seed=5)
    dealer.take(0, 0, *first)
    with pytest.raises(TupleReuseError, match="out of step"):
        dealer.take(1, 0, *second)
    assert dealer.cursor(1) == 0
    dealer.take(1, 0, *first)  # the matching request is still served


def test_sources_advance_independently_and_share_batches() -> None:
    dealer = Dealer(2, seed=3)
    first, second = dealer.source(0), dealer.source(1)
    a0 = first.triples(5)
    b0 = first.triples(5)
    a1 = second.triples(5)
    b1 = second.triples(5)
    np.testing.assert_array_equal(
        reconstruct([a0[2], a1[2]]), reconstruct([a0[0], a1[0]]) * reconstruct([a0[1], a1[1]])
    )
    np.testing.assert_array_equal(
        reconstruct([b0[2], b1[2]]), reconstruct([b0[0], b1[0]]) * reconstruct([b0[1], b1[1]])
    )
    assert not np.array_equal(reconstruct([a0[0], a1[0]]), reconstruct([b0[0], b1[0]]))
    assert dealer.cursor(0) == dealer.cursor(1) == 2


# -- determinism and one-party dealers --------------------------------------------------


def draw_everything(source: DealerSource) -> list[np.ndarray]:
    arrays: list[np.ndarray] = []
    arrays += source.triples(20)
    arrays += source.bit_triples(3)
    arrays += source.dabits(70)
    arrays += source.edabits(70, 64)
    arrays += source.edabits(70, 12)
    for part in source.shuffle(10, "ax"):
        if isinstance(part, PermuterShare):
            arrays += [part.permutation, part.delta]
        else:
            arrays += [part.mask, part.output]
    arrays.append(source.input_masks(8))
    return arrays


@PARTY_COUNTS
def test_seeded_dealers_with_the_same_seed_agree(parties: int) -> None:
    first, second, other = Dealer(parties, seed=99), Dealer(parties, seed=99), Dealer(parties, 98)
    for party in range(parties):
        mine = draw_everything(first.source(party))
        theirs = draw_everything(second.source(party))
        different = draw_everything(other.source(party))
        for left, right in zip(mine, theirs, strict=True):
            np.testing.assert_array_equal(left, right)
        assert not all(np.array_equal(a, b) for a, b in zip(mine, different, strict=True))


@PARTY_COUNTS
def test_unseeded_dealers_differ(parties: int) -> None:
    first = Dealer(parties).source(0).triples(16)
    second = Dealer(parties).source(0).triples(16)
    assert not np.array_equal(first[0], second[0])


@PARTY_COUNTS
def test_one_party_dealer_gives_the_shared_dealers_shares(parties: int) -> None:
    shared = Dealer(parties, seed=1234)
    expected = [draw_everything(shared.source(party)) for party in range(parties)]
    for party in range(parties):
        alone = draw_everything(Dealer(parties, seed=1234, only_party=party).source(party))
        for left, right in zip(alone, expected[party], strict=True):
            np.testing.assert_array_equal(left, right)


def test_one_party_dealer_also_refuses_reuse() -> None:
    dealer = Dealer(3, seed=8, only_party=2)
    dealer.source(2).triples(4)
    with pytest.raises(TupleReuseError):
        dealer.take(2, 0, "triples", (4,))


# -- argument checks --------------------------------------------------------------------


def test_dealer_argument_checks() -> None:
    with pytest.raises(ValueError):
        Dealer(0)
    with pytest.raises(ValueError, match="common seed"):
        Dealer(3, only_party=1)
    dealer = Dealer(3, seed=1)
    for party in (-1, 3):
        with pytest.raises(ValueError):
            dealer.source(party)
    with pytest.raises(ValueError, match="serves party 1 only"):
        Dealer(3, seed=1, only_party=1).source(0)


def test_source_argument_checks() -> None:
    source = Dealer(2, seed=1).source(0)
    for width in (0, 65):
        with pytest.raises(ValueError, match="width"):
            source.edabits(4, width)
    with pytest.raises(ValueError, match="kinds"):
        source.shuffle(4, "ab")
    assert source.dealer.cursor(0) == 0  # refused requests consume nothing
    assert source.generation_seconds == 0.0
    source.triples(10)
    assert source.generation_seconds > 0.0


# -- recorded plans and prefetching -----------------------------------------------------


def test_dealer_records_the_plan_of_requests() -> None:
    dealer = Dealer(2, seed=4)
    for party in (0, 1):
        draw_everything(dealer.source(party))
    assert dealer.requests == [
        ("triples", (20,)),
        ("bit_triples", (3,)),
        ("dabits", (70,)),
        ("edabits", (70, 64)),
        ("edabits", (70, 12)),
        ("shuffle", (10, "ax")),
        ("input_masks", (8,)),
    ]


@PARTY_COUNTS
def test_prefetched_batches_equal_lazily_generated_ones(parties: int) -> None:
    recorder = Dealer(parties, seed=21)
    lazy = [draw_everything(recorder.source(party)) for party in range(parties)]
    prefetched = Dealer(parties, seed=21)
    prefetched.prefetch(recorder.requests)
    for party in range(parties):
        for left, right in zip(draw_everything(prefetched.source(party)), lazy[party], strict=True):
            np.testing.assert_array_equal(left, right)


@PARTY_COUNTS
def test_one_party_dealer_prefetches_the_shared_dealers_shares(parties: int) -> None:
    shared = Dealer(parties, seed=22)
    expected = [draw_everything(shared.source(party)) for party in range(parties)]
    for party in range(parties):
        alone = Dealer(parties, seed=22, only_party=party)
        alone.prefetch(shared.requests)
        for left, right in zip(draw_everything(alone.source(party)), expected[party], strict=True):
            np.testing.assert_array_equal(left, right)


@PARTY_COUNTS
def test_prefetched_unseeded_tuples_satisfy_their_relations(parties: int) -> None:
    dealer = Dealer(parties)
    dealer.prefetch([("triples", (50,)), ("dabits", (100,)), ("edabits", (100, 20))])
    all_sources = [dealer.source(party) for party in range(parties)]
    triples = [source.triples(50) for source in all_sources]
    a, b, c = (reconstruct([share[k] for share in triples]) for k in range(3))
    np.testing.assert_array_equal(c, a * b)
    dabits = [source.dabits(100) for source in all_sources]
    np.testing.assert_array_equal(
        unpack_lanes(xor_reconstruct([packed for _, packed in dabits]), 100),
        reconstruct([arith for arith, _ in dabits]),
    )
    edabits = [source.edabits(100, 20) for source in all_sources]
    np.testing.assert_array_equal(
        from_planes(xor_reconstruct([planes for _, planes in edabits]), 100),
        reconstruct([arith for arith, _ in edabits]),
    )


def test_prefetching_never_reopens_consumed_batches() -> None:
    dealer = Dealer(2, seed=6)
    first, second = dealer.source(0), dealer.source(1)
    first.triples(4)
    second.triples(4)
    first.triples(4)  # batch 1: taken by party 0 only
    dealer.prefetch([("triples", (4,)), ("triples", (4,))])  # batches 2 and 3
    for party, batch in ((0, 0), (1, 0), (0, 1)):
        with pytest.raises(TupleReuseError):
            dealer.take(party, batch, "triples", (4,))
    second.triples(4)  # batch 1 is still served to party 1, once
    with pytest.raises(TupleReuseError):
        dealer.take(1, 1, "triples", (4,))
    for source in (first, second, first, second):
        source.triples(4)
    assert dealer.cursor(0) == dealer.cursor(1) == 4


def test_a_plan_that_disagrees_with_the_protocol_raises() -> None:
    dealer = Dealer(2, seed=6)
    dealer.prefetch([("triples", (4,))])
    with pytest.raises(TupleReuseError, match="out of step"):
        dealer.source(0).bit_triples(4)
