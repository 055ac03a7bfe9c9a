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
from tally.mpc.dp import DP, add_noise, binomial_noise
from tally.mpc.groupby import check_dp, dp_epsilon
from tally.mpc.party import Party
from tally.mpc.program import get_program
from tally.mpc.ring import decode_fixed, decode_int
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


@pytest.mark.parametrize(
    ("epsilon", "delta", "sensitivity", "rounded_sensitivity"),
    [
        (1.0, 1e-5, 1.0, 1),
        (0.5, 1e-6, 1.0, 1),
        (4.0, 1e-3, 1.0, 1),
        (1.0, 1e-5, 1.5, 2),
        (2.0, 0.01, 3.0, 3),
    ],
)
def test_trials_follow_the_documented_formula(
    epsilon: float, delta: float, sensitivity: float, rounded_sensitivity: int
) -> None:
    expected = math.ceil(64 * rounded_sensitivity**2 * math.log(2 / delta) / epsilon**2)

    assert DP(epsilon, delta, sensitivity).trials == expected


def test_more_privacy_costs_more_noise() -> None:
    base = DP(1.0, 1e-5).trials
    assert DP(0.5, 1e-5).trials > base > DP(2.0, 1e-5).trials
    assert DP(1.0, 1e-9).trials > base
    assert DP(1.0, 1e-5, sensitivity=2).trials >= 4 * base - 4


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
        ({"epsilon": 1.0, "delta": 1e-5, "sensitivity": 0.0}, "sensitivity"),
        ({"epsilon": 1.0, "delta": 1e-5, "sensitivity": -2.0}, "sensitivity"),
    ],
)
def test_bad_parameters_are_refused(params: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DP(**params)


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


def test_noise_is_scaled_to_fixed_point_units() -> None:
    dp = DP(epsilon=4.0, delta=1e-3)  # m = 31, rounded to 32

    def program(party: Party) -> np.ndarray:
        zeros = np.zeros(3000, np.uint64)
        (opened,) = open_values(party, [add_noise(party, zeros, dp, frac_bits=16)])
        return decode_fixed(opened, 16)

    noise = run_parties(3, program, seed=11, timeout=TIMEOUT)[0]

    assert_binomial_noise(noise, 32)


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


def grouped(
    frame: pd.DataFrame, dp: DP | None, seed: int | None, parties: int = 3
) -> dict[str, Any]:
    shares = share_table(
        {c: frame[c].to_numpy() for c in SPECS}, SPECS, parties, rng=np.random.default_rng(0)
    )

    def program(party: Party) -> dict[str, Any]:
        table = table_from_share_set(party, shares[party.id], SPECS)
        return table.group_by("region", domain=list(range(40))).agg(dp=dp, **AGGREGATIONS).reveal()

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


def test_group_by_with_dp_adds_binomial_noise_to_sums_and_counts() -> None:
    frame = dp_frame()
    exact = frame.groupby("region").agg(**{k: v for k, v in AGGREGATIONS.items() if k != "avg"})
    dp = DP(epsilon=2.0, delta=0.01)  # m = 85, rounded to 86: variance 21.5
    count_noise, total_noise, revenue_noise = [], [], []
    for seed in range(5):
        noisy = grouped(frame, dp, seed)
        np.testing.assert_array_equal(noisy["region"], np.arange(40))
        count_noise.append(noisy["n"] - exact.n.to_numpy())
        total_noise.append(noisy["total"] - exact.total.to_numpy())
        revenue_noise.append(noisy["revenue"] - exact.revenue.to_numpy())
        # the mean is the noisy sum over the noisy count (NaN where that count is not positive)
        positive = noisy["n"] > 0
        np.testing.assert_allclose(
            noisy["avg"][positive], noisy["total"][positive] / noisy["n"][positive], rtol=1e-12
        )
        assert np.isnan(noisy["avg"][~positive]).all()

    for noise in (count_noise, total_noise, revenue_noise):
        assert_binomial_noise(np.concatenate(noise).astype(float), 86, variance_slack=6.0)
    # sum and count get independent noise
    assert not np.array_equal(np.concatenate(count_noise), np.concatenate(total_noise))
    pooled = np.concatenate(count_noise + total_noise + revenue_noise).astype(float)
    assert_binomial_noise(pooled, 86)


@TUPLE_SOURCES
def test_no_noise_without_dp(seed: int | None) -> None:
    frame = dp_frame()

    got = grouped(frame, None, seed)

    expected = frame.groupby("region").agg(**AGGREGATIONS).reset_index()
    for name in expected.columns:
        np.testing.assert_array_equal(got[name], expected[name].to_numpy(), err_msg=name)


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
            dp={"epsilon": 1.0, "delta": 2.0},
        )

    with pytest.raises(ValueError, match="delta"):
        run_parties(2, program, seed=0, timeout=TIMEOUT)


def test_min_and_max_are_refused_under_dp_and_the_cost_counts_every_noised_release() -> None:
    with pytest.raises(ValueError, match=r"min and max would be opened without noise \(low\)"):
        check_dp({"n": ("views", "count"), "low": ("views", "min")}, DP(1.0, 1e-6))
    check_dp({"low": ("views", "min")}, None)  # no dp: nothing to refuse
    # count, plus views (sum and mean share one noised total), plus price: 3 releases
    assert dp_epsilon(AGGREGATIONS, DP(0.5, 1e-6)) == pytest.approx(1.5)
    assert dp_epsilon({"n": ("views", "count")}, DP(0.5, 1e-6)) == pytest.approx(0.5)
