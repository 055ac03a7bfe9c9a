"""Tests for tally.mpc.dp: the binomial mechanism inside MPC, with bounded statistical tests.

Bounds: with N samples of Binomial(m, 1/2) - m/2 the sample mean has standard
error sqrt(m/4 / N) and the sample variance about sqrt(2 / N) * m/4; every bound
below is at least five standard errors wide (a false alarm is rarer than one
in a million) yet far tighter than what a wrong m, a missing rounding to an
even m or a one-sided noise would give.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tally.mpc.arithmetic import open_values
from tally.mpc.dp import DP, binomial_noise, clip, exact_delta, noise_shift, round_to_unit
from tally.mpc.groupby import bound_contributions, check_dp, dp_delta, dp_epsilon
from tally.mpc.party import Party
from tally.mpc.program import get_program
from tally.mpc.ring import decode_int, encode_int, split
from tally.mpc.simulate import run_parties
from tally.mpc.table import ColumnSpec, SecretTable, share_table, table_from_share_set

TIMEOUT = 60.0
TUPLE_SOURCES = pytest.mark.parametrize("seed", [2024, None], ids=["seeded-dealer", "os-dealer"])


def opened_noise(parties: int, count: int, trials: int, seed: int | None) -> np.ndarray:
    def program(party: Party) -> np.ndarray:
        (opened,) = open_values(party, [binomial_noise(party, count, trials)])
        return decode_int(opened)

    results = run_parties(parties, program, seed=seed, timeout=TIMEOUT)
    for other in results[1:]:
        np.testing.assert_array_equal(other, results[0])
    return results[0]


def assert_binomial_noise(
    noise: np.ndarray, trials: int, mean_slack: float = 5.0, variance_slack: float = 5.0
) -> None:
    """Mean ~ 0 and variance ~ m/4 within ``slack`` standard errors; support within [-m/2, m/2]."""
    count, variance = noise.size, trials / 4
    assert np.all(noise == np.round(noise))
    assert np.abs(noise).max() <= trials // 2
    assert abs(noise.mean()) <= mean_slack * math.sqrt(variance / count)
    assert abs(noise.var() - variance) <= variance_slack * math.sqrt(2 / count) * variance


# -- choosing m ----------------------------------------------------------------------------------


def delta_by_fractions(trials: int, epsilon: float) -> float:
    """The hockey-stick divergence of Binomial(m, 1/2) and its shift by one, term by term."""
    from fractions import Fraction

    scale = Fraction(math.exp(epsilon))
    total = Fraction(0)
    for y in range(trials + 2):
        own = Fraction(math.comb(trials, y) if y <= trials else 0, 2**trials)
        shifted = Fraction(math.comb(trials, y - 1) if y >= 1 else 0, 2**trials)
        total += max(Fraction(0), own - scale * shifted)
    return float(total)


@pytest.mark.parametrize(("trials", "epsilon"), [(2, 1.0), (10, 0.5), (40, 1.0), (81, 2.0)])
def test_exact_delta_matches_the_divergence_computed_term_by_term(
    trials: int, epsilon: float
) -> None:
    assert exact_delta(trials, epsilon) == pytest.approx(
        delta_by_fractions(trials, epsilon), rel=1e-9, abs=1e-300
    )


@pytest.mark.parametrize(
    ("epsilon", "delta"), [(1.0, 1e-6), (0.5, 1e-6), (1.0, 1e-5), (4.0, 1e-3), (0.25, 1e-9)]
)
def test_trials_are_the_fewest_even_coins_that_reach_delta(epsilon: float, delta: float) -> None:
    trials = DP(epsilon, delta).trials

    assert trials % 2 == 0
    assert delta_by_fractions(trials, epsilon) <= delta
    assert delta_by_fractions(trials - 2, epsilon) > delta
    # far below the loose bound 64 ln(2/delta) / epsilon^2 of the DKMMN analysis
    assert trials < math.ceil(64 * math.log(2 / delta) / epsilon**2) / 3


def test_the_must_show_setting_costs_under_a_thousand_coins_whatever_the_clip() -> None:
    for bound in (1.0, 1000.0, 1e9):
        dp = DP(1.0, 1e-6, clip={"v": (-bound, bound)})
        assert dp.trials <= 1000
    assert DP(1.0, 1e-6).trials == DP(1.0, 1e-6, clip={"v": (-1e9, 1e9)}).trials


def test_more_privacy_costs_more_noise() -> None:
    base = DP(1.0, 1e-5).trials
    assert DP(0.5, 1e-5).trials > base > DP(2.0, 1e-5).trials
    assert DP(1.0, 1e-9).trials > base


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"epsilon": 0.0, "delta": 1e-5}, "epsilon"),
        ({"epsilon": -1.0, "delta": 1e-5}, "epsilon"),
        ({"epsilon": float("nan"), "delta": 1e-5}, "epsilon"),
        ({"epsilon": 1.0, "delta": 0.0}, "delta"),
        ({"epsilon": 1.0, "delta": 1.0}, "delta"),
        ({"epsilon": 1.0, "delta": -0.1}, "delta"),
        ({"epsilon": 1.0, "delta": float("nan")}, "delta"),
        ({"epsilon": 1.0, "delta": 1e-5, "sensitivity": 1.0}, "not set by the analyst"),
        ({"epsilon": 1.0, "delta": 1e-5, "clip": {"v": [3, 1]}}, "lo < hi"),
        ({"epsilon": 1.0, "delta": 1e-5, "clip": {"v": [0, 2.0**50]}}, "2\\^40"),
        ({"epsilon": 1.0, "delta": 1e-5, "max_contributions": 0}, "max_contributions"),
        ({"epsilon": 1.0, "delta": 1e-5, "noise": "laplace"}, "unknown dp settings"),
        ({"epsilon": 1e-4, "delta": 1e-12}, "raise epsilon or delta"),
    ],
)
def test_bad_parameters_are_refused(params: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DP.from_params(params)


# -- binomial_noise ------------------------------------------------------------------------------


@pytest.mark.parametrize("parties", [2, 3])
@TUPLE_SOURCES
def test_binomial_noise_has_mean_zero_and_variance_m_over_4(parties: int, seed: int | None) -> None:
    trials = 31  # odd: the protocol rounds up to m = 32
    seeds = [None] * 4 if seed is None else [seed + i for i in range(4)]
    noise = np.concatenate([opened_noise(parties, 2500, trials, s) for s in seeds])

    assert_binomial_noise(noise, 32)
    # and the shape is the binomial one: total variation distance to Binomial(32, 1/2) - 16
    pmf = np.array([math.comb(32, k) for k in range(33)]) / 2.0**32
    frequencies = np.bincount(noise + 16, minlength=33) / noise.size
    assert 0.5 * np.abs(frequencies - pmf).sum() < 0.04


def test_binomial_noise_is_reproducible_with_a_seeded_dealer_only() -> None:
    first = opened_noise(2, 200, 20, seed=7)
    again = opened_noise(2, 200, 20, seed=7)
    other = opened_noise(2, 200, 20, seed=8)

    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_noise_unit_is_the_smallest_power_of_two_covering_the_sensitivity() -> None:
    assert [noise_shift(s) for s in (1, 2, 3, 4, 5, 1 << 16, (1 << 16) + 1)] == [
        0,
        1,
        2,
        2,
        3,
        16,
        17,
    ]


@pytest.mark.parametrize("shift", [1, 5, 16, 30])
def test_round_to_unit_rounds_signed_values_to_the_nearest_multiple(shift: int) -> None:
    rng = np.random.default_rng(shift)
    values = np.concatenate(
        [
            rng.integers(-(2**60), 2**60, 300),
            np.array([0, 1, -1, 2 ** (shift - 1), -(2 ** (shift - 1))]),
        ]
    )

    def program(party: Party) -> np.ndarray:
        shares = split(encode_int(values), party.parties, np.random.default_rng(1))[party.id]
        (opened,) = open_values(party, [round_to_unit(party, shares, shift)])
        return decode_int(opened)

    got = run_parties(3, program, seed=3, timeout=TIMEOUT)[0]

    expected = np.floor_divide(values + (1 << (shift - 1)), 1 << shift)
    np.testing.assert_array_equal(got, expected)


def test_clip_matches_numpy_inside_mpc() -> None:
    rng = np.random.default_rng(5)
    values = np.concatenate(
        [rng.integers(-(2**61), 2**61, 200), rng.integers(-50, 50, 200), np.array([-7, 9, -8, 10])]
    )

    def program(party: Party) -> np.ndarray:
        shares = split(encode_int(values), party.parties, np.random.default_rng(2))[party.id]
        (opened,) = open_values(party, [clip(party, shares, -7, 9)])
        return decode_int(opened)

    got = run_parties(2, program, seed=4, timeout=TIMEOUT)[0]

    np.testing.assert_array_equal(got, np.clip(values, -7, 9))


# -- group_by().agg(dp=...) end to end -----------------------------------------------------------


SPECS = {
    "region": ColumnSpec("key", bits=6),
    "views": ColumnSpec("int"),
    "price": ColumnSpec("fixed"),
}
AGGREGATIONS = {
    "total": ("views", "sum"),
    "n": ("views", "count"),
    "revenue": ("price", "sum"),
    "avg": ("views", "mean"),
}
CLIP = {"views": (-100.0, 100.0), "price": (-10.0, 10.0)}


def grouped(
    frame: pd.DataFrame,
    dp: DP | None,
    seed: int | None,
    parties: int = 3,
    specs: dict[str, ColumnSpec] = SPECS,
    aggregations: dict[str, tuple[str, str]] = AGGREGATIONS,
    domain: list[int] | None = None,
) -> dict[str, Any]:
    shares = share_table(
        {c: frame[c].to_numpy() for c in specs}, specs, parties, rng=np.random.default_rng(0)
    )
    keys = list(range(40)) if domain is None else domain

    def program(party: Party) -> dict[str, Any]:
        table = table_from_share_set(party, shares[party.id], specs)
        return table.group_by("region", domain=keys).agg(dp=dp, **aggregations).reveal()

    results = run_parties(parties, program, seed=seed, timeout=TIMEOUT)
    for other in results[1:]:
        for name in other:
            np.testing.assert_array_equal(other[name], results[0][name])
    return results[0]


def dp_frame() -> pd.DataFrame:
    rng = np.random.default_rng(40)
    return pd.DataFrame(
        {
            "region": np.repeat(np.arange(40), 5),
            "views": rng.integers(-99, 99, 200),
            "price": rng.integers(-640, 640, 200) / 64.0,
        }
    )


def test_group_by_with_dp_rounds_to_the_noise_unit_and_adds_binomial_noise() -> None:
    frame = dp_frame()
    exact = frame.groupby("region").agg(**{k: v for k, v in AGGREGATIONS.items() if k != "avg"})
    dp = DP(epsilon=2.0, delta=0.01, clip=CLIP)
    trials = dp.trials
    # units: count 1; views clipped to 100 -> 128; price to 10 (2^16 raw units each) -> 16
    units = {"n": 1, "total": 128, "revenue": 16}
    noise: dict[str, list[np.ndarray]] = {name: [] for name in units}
    for seed in range(5):
        noisy = grouped(frame, dp, seed)
        np.testing.assert_array_equal(noisy["region"], np.arange(40))
        for name, unit in units.items():
            released = noisy[name] / unit
            # every released bit below the unit is zero: no bit of the exact value passes
            np.testing.assert_array_equal(released, np.round(released))
            noise[name].append(released - np.round(exact[name].to_numpy() / unit + 1e-9))
        positive = noisy["n"] > 0
        np.testing.assert_allclose(
            noisy["avg"][positive], noisy["total"][positive] / noisy["n"][positive], rtol=1e-12
        )
        assert np.isnan(noisy["avg"][~positive]).all()

    for name in units:
        # rounding moves the exact value by at most half a unit
        samples = np.concatenate(noise[name]).astype(float)
        assert np.abs(samples).max() <= trials // 2 + 1
        assert (
            abs(samples.var() - trials / 4) <= 6.0 * math.sqrt(2 / samples.size) * trials / 4 + 0.25
        )
    assert not np.array_equal(np.concatenate(noise["n"]), np.concatenate(noise["total"]))


def release_samples(
    values: list[float], extra: float, copies: int, dp: DP
) -> tuple[np.ndarray, np.ndarray]:
    """``copies`` releases of the sum over ``values`` (dataset D) and over ``values`` plus
    one row ``extra`` (its neighbour D'), from one MPC run: every copy is a group of its own."""
    base = len(values)
    region = np.concatenate(
        [np.repeat(np.arange(copies), base), np.repeat(np.arange(copies, 2 * copies), base + 1)]
    )
    price = np.concatenate([np.tile(values, copies), np.tile([*values, extra], copies)])
    specs = {"region": ColumnSpec("key", bits=12), "price": ColumnSpec("fixed")}
    frame = pd.DataFrame({"region": region, "price": price})
    got = grouped(
        frame,
        dp,
        seed=None,
        specs=specs,
        aggregations={"revenue": ("price", "sum")},
        domain=list(range(2 * copies)),
    )
    return got["revenue"][:copies], got["revenue"][copies:]


@pytest.mark.parametrize("extra", [0.3, 1e6], ids=["fractional", "far-outside-the-clip"])
def test_neighbouring_datasets_are_told_apart_at_most_e_epsilon_times_better(extra: float) -> None:
    """For every output, P_D(y) <= e^epsilon P_D'(y) + delta (and the other way), up to
    five standard errors of the empirical frequencies; and the released unit's parity (its
    lowest bit that is not constant zero) is uniform."""
    epsilon = 1.0
    dp = DP(epsilon, 1e-6, clip={"price": (-4.0, 4.0)})
    copies = 1500
    first, second = release_samples([1.25, -0.75, 2.5], extra, copies, dp)

    unit = 4.0  # max(|lo|, |hi|) = 4 = 2^18 raw units: the unit is exactly 4
    for sample in (first, second):
        np.testing.assert_array_equal(sample / unit, np.round(sample / unit))
    outputs = np.union1d(first, second)
    p = np.array([(first == y).mean() for y in outputs])
    q = np.array([(second == y).mean() for y in outputs])
    error = 5 * np.sqrt((p + q) / 2 / copies) + 5 / copies
    assert np.all(p <= math.exp(epsilon) * q + 1e-6 + error)
    assert np.all(q <= math.exp(epsilon) * p + 1e-6 + error)
    parity = np.concatenate([first, second]) / unit % 2
    assert abs(parity.mean() - 0.5) <= 5 * math.sqrt(0.25 / parity.size)


@TUPLE_SOURCES
def test_no_noise_without_dp(seed: int | None) -> None:
    frame = dp_frame()

    got = grouped(frame, None, seed)

    expected = frame.groupby("region").agg(**AGGREGATIONS).reset_index()
    for name in expected.columns:
        np.testing.assert_array_equal(got[name], expected[name].to_numpy(), err_msg=name)


def test_clipping_bounds_each_value_before_it_is_summed() -> None:
    frame = pd.DataFrame({"region": [0, 0, 1, 1], "views": [5000, 3, -900, 2], "price": [0.5] * 4})
    dp = DP(epsilon=10.0, delta=0.4, clip={"views": (-10.0, 10.0)})

    got = grouped(frame, dp, 1, aggregations={"total": ("views", "sum")}, domain=[0, 1])

    # clipped sums 13 and -8, released in units of 16 with noise of few units
    assert dp.trials <= 4
    np.testing.assert_array_equal(got["total"] % 16, 0)
    assert np.all(np.abs(got["total"] - np.array([13, -8])) <= 16 * (dp.trials // 2) + 8)


def test_the_groupby_program_refuses_bad_dp_parameters() -> None:
    shares = share_table(
        {"region": np.array([1]), "views": np.array([2]), "price": np.array([0.5])},
        SPECS,
        2,
        rng=np.random.default_rng(0),
    )

    def program(party: Party) -> Any:
        tables: dict[str, SecretTable] = {"t": table_from_share_set(party, shares[party.id], SPECS)}
        return get_program("groupby")(
            tables,
            keys=["region"],
            aggregations={"n": ["views", "count"]},
            domain=[1],
            dp={"epsilon": 1.0, "delta": 2.0},
        )

    with pytest.raises(ValueError, match="delta"):
        run_parties(2, program, seed=0, timeout=TIMEOUT)


def test_what_dp_needs_is_refused_without_it_and_the_cost_counts_every_release() -> None:
    dp = DP(1.0, 1e-6, clip={"views": (0.0, 1.0)})
    count = {"n": ("views", "count")}
    with pytest.raises(ValueError, match=r"min and max would be opened without noise \(low\)"):
        check_dp({"n": ("views", "count"), "low": ("views", "min")}, dp, [1])
    check_dp({"low": ("views", "min")}, None)  # no dp: nothing to refuse
    # the released keys must not depend on the data
    with pytest.raises(ValueError, match="public domain"):
        check_dp(count, dp)
    with pytest.raises(ValueError, match="public domain"):
        check_dp(count, dp, None, 10)
    with pytest.raises(ValueError, match="clip bounds: set dp.clip for price"):
        check_dp({"r": ("price", "sum")}, dp, [1])
    check_dp({"t": ("views", "sum"), **count}, dp, [1])
    # count, plus views (sum and mean share one noised total), plus price: 3 releases
    assert dp_epsilon(AGGREGATIONS, DP(0.5, 1e-6)) == pytest.approx(1.5)
    assert dp_delta(AGGREGATIONS, DP(0.5, 1e-6)) == pytest.approx(3e-6)
    assert dp_epsilon(count, DP(0.5, 1e-6)) == pytest.approx(0.5)


def test_unpadded_dp_is_refused_by_the_engine() -> None:
    frame = dp_frame()
    shares = share_table(
        {c: frame[c].to_numpy() for c in SPECS}, SPECS, 2, rng=np.random.default_rng(0)
    )

    def program(party: Party) -> Any:
        table = table_from_share_set(party, shares[party.id], SPECS)
        return table.group_by("region").agg(dp=DP(1.0, 1e-6), n=("views", "count"))

    with pytest.raises(ValueError, match="public domain"):
        run_parties(2, program, seed=0, timeout=TIMEOUT)


# -- contribution bounding ------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [1, 2, 5])
def test_bound_contributions_keeps_at_most_k_valid_rows_per_unit(limit: int) -> None:
    rng = np.random.default_rng(limit)
    rows = 300
    frame = pd.DataFrame({"user": rng.integers(0, 40, rows), "views": rng.integers(-50, 50, rows)})
    valid = rng.integers(0, 2, rows)
    valid[:5] = 1
    specs = {"user": ColumnSpec("key", bits=8), "views": ColumnSpec("int")}
    shares = share_table(
        {c: frame[c].to_numpy() for c in specs}, specs, 3, valid=valid, rng=np.random.default_rng(9)
    )

    def program(party: Party) -> dict[str, Any]:
        table = table_from_share_set(party, shares[party.id], specs)
        return bound_contributions(table, "user", limit).reveal()

    got = pd.DataFrame(run_parties(3, program, seed=5, timeout=TIMEOUT)[0])

    real = frame[valid == 1]
    per_user = got.groupby("user").size()
    expected = real.groupby("user").size().clip(upper=limit)
    pd.testing.assert_series_equal(per_user, expected, check_names=False)
    # the rows kept are rows of that user (a multiset inclusion, user by user)
    for user, kept in got.groupby("user"):
        assert set(kept["views"]) <= set(real[real.user == user]["views"])


def test_dp_with_a_privacy_unit_bounds_each_persons_rows() -> None:
    frame = pd.DataFrame(
        {
            "region": [0] * 9 + [1] * 2,
            "user": [7] * 8 + [3] + [5, 6],
            "views": [1] * 11,
            "price": [0.0] * 11,
        }
    )
    specs = {**SPECS, "user": ColumnSpec("key", bits=4)}
    dp = DP(10.0, 0.4, clip={"views": (0.0, 1.0)}, unit="user", max_contributions=2)

    got = grouped(frame, dp, 2, specs=specs, aggregations={"n": ("views", "count")}, domain=[0, 1])

    # region 0 keeps 2 rows of user 7 and the row of user 3: 3, in units of 2
    assert dp.trials <= 4
    np.testing.assert_array_equal(got["n"] % 2, 0)
    assert np.all(np.abs(got["n"] - np.array([3, 2])) <= 2 * (dp.trials // 2) + 1)
