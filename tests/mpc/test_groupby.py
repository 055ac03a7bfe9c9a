"""Tests for tally.mpc.groupby: secure group_by().agg(), checked against pandas when revealed."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pytest
from numpy.typing import ArrayLike
from tests.mpc.tables import run_frame_at_every_party

from tally.mpc.dp import DP
from tally.mpc.party import Party
from tally.mpc.simulate import run_parties
from tally.mpc.table import ColumnSpec, SecretTable, share_table, table_from_share_set

PARTY_COUNTS = pytest.mark.parametrize("parties", [2, 3, 5])
TUPLE_SOURCES = pytest.mark.parametrize("seed", [2024, None], ids=["seeded-dealer", "os-dealer"])
TIMEOUT = 60.0

SPECS = {
    "region": ColumnSpec("key", bits=4),
    "views": ColumnSpec("int"),
    "price": ColumnSpec("fixed"),
}
ALL_FUNCTIONS = {
    "total": ("views", "sum"),
    "n": ("views", "count"),
    "avg": ("views", "mean"),
    "lo": ("views", "min"),
    "hi": ("views", "max"),
    "revenue": ("price", "sum"),
    "avg_price": ("price", "mean"),
    "cheapest": ("price", "min"),
    "dearest": ("price", "max"),
    "spread": ("views", "var"),
    "sd": ("views", "std"),
    "kinds": ("views", "count_distinct"),
    "price_points": ("price", "count_distinct"),
}
PANDAS_NAMES = {"count_distinct": "nunique"}
"""Where pandas names an aggregate otherwise."""


def rows_for(parties: int) -> int:
    """Keep the 5-party cases small."""
    return 60 if parties >= 5 else 300


def make_frame(rows: int, regions: int, seed: int) -> pd.DataFrame:
    """Duplicate keys, negative ints, fixed-point values that the encoding holds exactly."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "region": rng.integers(0, regions, rows),
            "views": rng.integers(-500, 1000, rows),
            "price": rng.integers(-4000, 4000, rows) / 64.0,
        }
    )


def run_on_table(
    parties: int,
    frame: pd.DataFrame,
    specs: Mapping[str, ColumnSpec],
    program: Callable[[SecretTable], Any],
    *,
    valid: ArrayLike | None = None,
    seed: int | None = 2024,
) -> Any:
    """Share ``frame``, run ``program(table)`` at every party; check they agree, return one."""
    results = run_frame_at_every_party(
        parties, frame, specs, program, valid=valid, seed=seed, share_seed=7, timeout=TIMEOUT
    )
    for other in results[1:]:
        assert_same_output(other, results[0])
    return results[0]


def assert_same_output(left: Any, right: Any) -> None:
    if isinstance(left, (tuple, list)):
        for a, b in zip(left, right, strict=True):
            assert_same_output(a, b)
        return
    assert list(left) == list(right)
    for name in left:
        np.testing.assert_array_equal(left[name], right[name])


def expected_groupby(
    frame: pd.DataFrame,
    keys: list[str],
    aggregations: Mapping[str, tuple[str, str]],
    valid: ArrayLike | None = None,
) -> pd.DataFrame:
    real = frame if valid is None else frame[np.asarray(valid) == 1]
    named = {n: (c, PANDAS_NAMES.get(f, f)) for n, (c, f) in aggregations.items()}
    return real.groupby(keys, sort=True).agg(**named).reset_index()


def assert_matches(
    got: Mapping[str, np.ndarray], expected: pd.DataFrame, atol: float = 1e-9
) -> None:
    """Column names, order, row count and values (ints exactly, reals to ``atol``)."""
    assert list(got) == list(expected.columns)
    for name in expected.columns:
        values, wanted = np.asarray(got[name]), expected[name].to_numpy()
        assert values.shape == wanted.shape, name
        if values.dtype.kind in "iu" and wanted.dtype.kind in "iu":
            np.testing.assert_array_equal(values, wanted, err_msg=name)
        else:
            np.testing.assert_allclose(
                values.astype(float), wanted.astype(float), rtol=0, atol=atol, err_msg=name
            )


def group_all(
    keys: Any, aggregations: Mapping[str, tuple[str, str]], **options: Any
) -> Callable[[SecretTable], dict[str, np.ndarray]]:
    def program(table: SecretTable) -> dict[str, np.ndarray]:
        return table.group_by(keys, **options).agg(**aggregations).reveal()

    return program


# -- aggregates against pandas --------------------------------------------------------------


@PARTY_COUNTS
@TUPLE_SOURCES
def test_every_function_matches_pandas_on_duplicate_keys(parties: int, seed: int | None) -> None:
    frame = make_frame(rows_for(parties), regions=7, seed=parties)

    got = run_on_table(parties, frame, SPECS, group_all("region", ALL_FUNCTIONS), seed=seed)

    assert_matches(got, expected_groupby(frame, ["region"], ALL_FUNCTIONS))


@PARTY_COUNTS
def test_single_group(parties: int) -> None:
    frame = make_frame(rows_for(parties) // 2, regions=1, seed=11).assign(region=5)

    got = run_on_table(parties, frame, SPECS, group_all("region", ALL_FUNCTIONS))

    expected = expected_groupby(frame, ["region"], ALL_FUNCTIONS)
    assert len(expected) == 1
    assert_matches(got, expected)


@PARTY_COUNTS
def test_all_distinct_keys(parties: int) -> None:
    rows = 12 if parties >= 5 else 16
    frame = make_frame(rows, regions=1, seed=12)
    frame["region"] = np.random.default_rng(12).permutation(16)[:rows]

    got = run_on_table(parties, frame, SPECS, group_all("region", ALL_FUNCTIONS))

    expected = expected_groupby(frame, ["region"], ALL_FUNCTIONS)
    assert len(expected) == rows
    assert_matches(got, expected)


def test_one_row_table() -> None:
    frame = pd.DataFrame({"region": [3], "views": [-42], "price": [2.5]})

    got = run_on_table(2, frame, SPECS, group_all("region", ALL_FUNCTIONS))

    assert_matches(got, expected_groupby(frame, ["region"], ALL_FUNCTIONS))


def test_fixed_point_values_with_rounding_stay_within_the_encoding_precision() -> None:
    rng = np.random.default_rng(13)
    frame = pd.DataFrame(
        {
            "region": rng.integers(0, 5, 300),
            "views": rng.integers(0, 9, 300),
            "price": rng.normal(-3.0, 50.0, 300).round(5),
        }
    )
    aggregations = {
        "revenue": ("price", "sum"),
        "avg": ("price", "mean"),
        "lo": ("price", "min"),
        "hi": ("price", "max"),
    }

    got = run_on_table(3, frame, SPECS, group_all("region", aggregations))

    # each value is rounded to 2^-16 once; a sum of k values is off by at most k * 2^-17
    assert_matches(got, expected_groupby(frame, ["region"], aggregations), atol=300 * 2.0**-17)


@pytest.mark.parametrize("parties", [2, 3])
def test_several_key_columns_of_kind_key(parties: int) -> None:
    rng = np.random.default_rng(14)
    frame = make_frame(250, regions=4, seed=14).assign(channel=rng.integers(0, 20, 250))
    specs = {**SPECS, "channel": ColumnSpec("key", bits=5)}
    aggregations = {
        "total": ("views", "sum"),
        "n": ("views", "count"),
        "avg": ("price", "mean"),
        "hi": ("price", "max"),
    }

    got = run_on_table(parties, frame, specs, group_all(["region", "channel"], aggregations))

    assert_matches(got, expected_groupby(frame, ["region", "channel"], aggregations))


@PARTY_COUNTS
def test_negative_int_key_groups_come_out_in_signed_order(parties: int) -> None:
    rng = np.random.default_rng(15)
    rows = rows_for(parties) // 2
    frame = make_frame(rows, regions=1, seed=15).assign(delta=rng.integers(-6, 6, rows))
    specs = {**SPECS, "delta": ColumnSpec("int")}
    aggregations = {"total": ("views", "sum"), "n": ("views", "count"), "lo": ("price", "min")}

    got = run_on_table(parties, frame, specs, group_all("delta", aggregations))

    assert_matches(got, expected_groupby(frame, ["delta"], aggregations))


@pytest.mark.parametrize("int_bits", [0, 8], ids=["int-63-bits", "int-8-bits"])
@pytest.mark.parametrize("parties", [2, 3])
def test_keys_mixing_a_key_column_and_a_negative_int_column(parties: int, int_bits: int) -> None:
    rng = np.random.default_rng(16)
    frame = make_frame(200, regions=3, seed=16).assign(year=rng.integers(-3, 3, 200))
    specs = {**SPECS, "year": ColumnSpec("int", bits=int_bits)}
    aggregations = {
        "total": ("views", "sum"),
        "n": ("views", "count"),
        "avg": ("views", "mean"),
        "lo": ("views", "min"),
        "hi": ("price", "max"),
    }

    got = run_on_table(parties, frame, specs, group_all(["year", "region"], aggregations))

    assert_matches(got, expected_groupby(frame, ["year", "region"], aggregations))


# -- dummy rows ------------------------------------------------------------------------------


@PARTY_COUNTS
@TUPLE_SOURCES
def test_dummy_rows_do_not_count(parties: int, seed: int | None) -> None:
    rows = rows_for(parties)
    frame = make_frame(rows, regions=5, seed=17)
    valid = (np.random.default_rng(17).random(rows) < 0.6).astype(int)
    # every key keeps real rows here; keys held only by dummy rows have their own test
    assert set(frame.region[valid == 1]) == set(frame.region)

    got = run_on_table(
        parties, frame, SPECS, group_all("region", ALL_FUNCTIONS), valid=valid, seed=seed
    )

    assert_matches(got, expected_groupby(frame, ["region"], ALL_FUNCTIONS, valid))


@pytest.mark.parametrize(
    "options",
    [{}, {"max_groups": 8}, {"max_groups": 2}],
    ids=["no-padding", "max-groups", "max-groups-equal-to-real-groups"],
)
def test_a_key_held_only_by_dummy_rows_is_not_a_group(options: dict[str, Any]) -> None:
    frame = pd.DataFrame(
        {
            "region": [1, 1, 2, 3, 3, 9],
            "views": [5, 6, 7, 8, 9, 10],
            "price": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        }
    )
    valid = [1, 1, 0, 1, 1, 0]
    aggregations = {"total": ("views", "sum"), "n": ("views", "count")}

    got = run_on_table(3, frame, SPECS, group_all("region", aggregations, **options), valid=valid)

    # pandas over the real rows: regions 1 and 3 only; 2 and 9 exist only as dummies,
    # so two output slots are enough for every real group
    assert_matches(got, expected_groupby(frame, ["region"], aggregations, valid))


# -- output padding ----------------------------------------------------------------------------


def expected_over_domain(
    frame: pd.DataFrame,
    key: str,
    domain: Sequence[int],
    aggregations: Mapping[str, tuple[str, str]],
    valid: ArrayLike | None = None,
) -> pd.DataFrame:
    """pandas reindexed over the domain (key order): absent keys count 0, sum 0, else NaN."""
    grouped = expected_groupby(frame, [key], aggregations, valid).set_index(key)
    full = grouped.reindex(sorted(domain))
    for name, (_, function) in aggregations.items():
        if function in ("sum", "count", "count_distinct"):
            integral = function != "sum"
            full[name] = full[name].fillna(0).astype(np.int64 if integral else float)
    return full.rename_axis(key).reset_index()


@PARTY_COUNTS
@TUPLE_SOURCES
def test_domain_padding_includes_absent_keys(parties: int, seed: int | None) -> None:
    rows = rows_for(parties)
    frame = make_frame(rows, regions=1, seed=18)
    frame["region"] = np.random.default_rng(18).choice([1, 3, 4, 7], rows)
    valid = (np.random.default_rng(19).random(rows) < 0.8).astype(int)
    domain = [int(v) for v in np.random.default_rng(20).permutation(12)]  # order does not matter

    def program(table: SecretTable) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        result = table.group_by("region", domain=domain).agg(**ALL_FUNCTIONS)
        return result.reveal(), result.reveal(drop_invalid=False)

    got, unfiltered = run_on_table(parties, frame, SPECS, program, valid=valid, seed=seed)

    expected = expected_over_domain(frame, "region", domain, ALL_FUNCTIONS, valid)
    assert len(expected) == 12 and (expected.n == 0).sum() == 8
    assert_matches(got, expected)
    np.testing.assert_array_equal(unfiltered["valid"], np.ones(12))
    np.testing.assert_array_equal(unfiltered["n"], expected.n)


def test_domain_padding_ignores_dummy_rows_with_keys_outside_the_domain() -> None:
    """Dummy rows may carry any key (split_partitions pads an empty partition with key 0)."""
    frame = pd.DataFrame(
        {"region": [1, 1, 3, 0, 0], "views": [5, 6, 7, 8, 9], "price": [1.0, 2.0, 3.0, 4.0, 5.0]}
    )
    valid = [1, 1, 1, 0, 0]
    aggregations = {"total": ("views", "sum"), "n": ("views", "count")}

    got = run_on_table(
        3, frame, SPECS, group_all("region", aggregations, domain=[1, 2, 3]), valid=valid
    )

    # domain keys 1, 2, 3 with counts 2, 0, 1; key 0 is in no real row and not in the domain
    assert_matches(got, expected_over_domain(frame, "region", [1, 2, 3], aggregations, valid))


def test_domain_with_several_key_columns() -> None:
    rng = np.random.default_rng(21)
    frame = make_frame(200, regions=3, seed=21).assign(channel=rng.integers(0, 2, 200))
    specs = {**SPECS, "channel": ColumnSpec("key", bits=2)}
    domain = [(r, c) for r in range(4) for c in range(3)]
    aggregations = {"total": ("views", "sum"), "n": ("views", "count"), "avg": ("views", "mean")}

    got = run_on_table(
        3, frame, specs, group_all(["region", "channel"], aggregations, domain=domain)
    )

    grouped = expected_groupby(frame, ["region", "channel"], aggregations).set_index(
        ["region", "channel"]
    )
    expected = grouped.reindex(pd.MultiIndex.from_tuples(domain, names=["region", "channel"]))
    expected["total"] = expected.total.fillna(0)
    expected["n"] = expected.n.fillna(0).astype(np.int64)
    assert_matches(got, expected.reset_index())


def test_domain_padding_over_an_empty_table() -> None:
    frame = pd.DataFrame(
        {"region": np.zeros(0, int), "views": np.zeros(0, int), "price": np.zeros(0)}
    )
    aggregations = {"total": ("views", "sum"), "n": ("views", "count"), "lo": ("views", "min")}

    got = run_on_table(2, frame, SPECS, group_all("region", aggregations, domain=[2, 0]))

    np.testing.assert_array_equal(got["region"], [0, 2])
    np.testing.assert_array_equal(got["total"], [0, 0])
    np.testing.assert_array_equal(got["n"], [0, 0])
    assert np.isnan(got["lo"]).all()


@PARTY_COUNTS
def test_max_groups_larger_than_the_number_of_groups(parties: int) -> None:
    rows = rows_for(parties)
    frame = make_frame(rows, regions=6, seed=22)
    valid = (np.random.default_rng(22).random(rows) < 0.9).astype(int)
    assert set(frame.region[valid == 1]) == set(range(6))

    def program(table: SecretTable) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        result = table.group_by("region", max_groups=10).agg(**ALL_FUNCTIONS)
        return result.reveal(), result.reveal(drop_invalid=False)

    got, unfiltered = run_on_table(parties, frame, SPECS, program, valid=valid)

    expected = expected_groupby(frame, ["region"], ALL_FUNCTIONS, valid)
    assert_matches(got, expected)
    assert all(len(column) == 10 for column in unfiltered.values())
    np.testing.assert_array_equal(unfiltered["valid"], [1] * 6 + [0] * 4)
    np.testing.assert_array_equal(unfiltered["total"][:6], expected.total)
    for name in ("region", "total", "n", "revenue"):
        np.testing.assert_array_equal(unfiltered[name][6:], 0)
    for name in ("avg", "lo", "hi", "avg_price", "cheapest", "dearest"):
        assert np.isnan(unfiltered[name][6:]).all()


def test_max_groups_hides_the_number_of_groups_in_the_traffic(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two inputs of one size with 1 and 9 groups: same output shape, same rounds and bytes.

    With the radix sort for every sort: a quicksort's traffic is exactly equal only for
    inputs whose keys rank the shuffled rows alike (its levels follow that uniformly
    random permutation; tests/mpc/test_quicksort.py checks it).
    """
    import tally.mpc.sorting as sorting

    monkeypatch.setattr(sorting, "choose_sort", lambda widths, rows: "radix")
    aggregations = {"total": ("views", "sum"), "n": ("views", "count"), "hi": ("views", "max")}

    def traffic(frame: pd.DataFrame) -> list[tuple[int, int, int]]:
        shares = share_table(
            {c: frame[c].to_numpy() for c in SPECS}, SPECS, 3, rng=np.random.default_rng(0)
        )

        def run(party: Party) -> tuple[int, int, int]:
            table = table_from_share_set(party, shares[party.id], SPECS)
            out = table.group_by("region", max_groups=12).agg(**aggregations)
            rows = len(out.reveal(drop_invalid=False)["region"])
            return rows, party.transport.rounds, party.transport.bytes_sent

        return run_parties(3, run, seed=1, timeout=TIMEOUT)

    one_group = make_frame(120, regions=1, seed=23)
    nine_groups = make_frame(120, regions=9, seed=23)
    assert traffic(one_group) == traffic(nine_groups)


def test_without_padding_the_output_has_one_row_per_group() -> None:
    frame = make_frame(100, regions=9, seed=24)

    got = run_on_table(
        2,
        frame,
        SPECS,
        lambda t: t.group_by("region").agg(n=("views", "count")).reveal(drop_invalid=False),
    )

    assert len(got["region"]) == frame.region.nunique()
    np.testing.assert_array_equal(got["valid"], 1)


# -- misuse fails loudly -----------------------------------------------------------------------


def run_misuse(program: Callable[[SecretTable], Any]) -> None:
    frame = make_frame(10, regions=3, seed=25)
    run_on_table(2, frame, SPECS, program)


def test_count_distinct_under_dp_is_noised_and_charged_as_a_release() -> None:
    """Issue 15 item 4: count_distinct makes sense under dp (sensitivity k), so it gets
    noise of its own and counts as one more release in the job's epsilon."""
    from tally.mpc.groupby import dp_epsilon

    frame = make_frame(300, regions=4, seed=73)
    frame["views"] = frame["views"] % 20
    dp = DP(10.0, 1e-6)
    aggregations = {"n": ("views", "count"), "kinds": ("views", "count_distinct")}
    assert dp_epsilon(aggregations, dp) == pytest.approx(2 * 10.0)

    def program(table: SecretTable) -> Any:
        grouped = table.group_by("region", domain=[0, 1, 2, 3])
        return grouped.agg(dp=dp, **aggregations).reveal()

    got = run_on_table(3, frame, SPECS, program)

    exact = frame.groupby("region")["views"].nunique().to_numpy()
    assert np.all(np.abs(got["kinds"] - exact) <= 8), (got["kinds"], exact)


def test_var_and_std_refuse_fixed_point_columns_and_dp() -> None:
    """Issue 15 item 4: var and std of an integer column work (ALL_FUNCTIONS, against
    pandas); of a fixed-point column they would need truncation, and under dp their
    sensitivity drowns them: both refused before anything runs."""
    frame = make_frame(40, regions=3, seed=71)

    def fixed(table: SecretTable) -> Any:
        return table.group_by("region").agg(v=("price", "var"))

    with pytest.raises(ValueError, match="truncation protocol"):
        run_on_table(2, frame, SPECS, fixed)

    def noisy(table: SecretTable) -> Any:
        grouped = table.group_by("region", domain=[0, 1, 2])
        return grouped.agg(dp=DP(1.0, 1e-6, clip={"views": (0, 10)}), s=("views", "std"))

    with pytest.raises(ValueError, match="var and std are refused"):
        run_on_table(2, frame, SPECS, noisy)


@pytest.mark.parametrize(
    ("program", "error", "message"),
    [
        (lambda t: t.group_by("nope"), KeyError, "unknown column 'nope'"),
        (lambda t: t.group_by("region").agg(x=("nope", "sum")), KeyError, "unknown column 'nope'"),
        (
            lambda t: t.group_by("region").agg(x=("views", "median")),
            ValueError,
            "unknown aggregation 'median'",
        ),
        (
            lambda t: t.group_by("region", domain=[1, 2], max_groups=4).agg(n=("views", "count")),
            ValueError,
            "either domain or max_groups",
        ),
        (
            lambda t: t.group_by("region", max_groups=0).agg(n=("views", "count")),
            ValueError,
            "at least 1",
        ),
        (
            lambda t: t.group_by("region", domain=[1, 1]).agg(n=("views", "count")),
            ValueError,
            "distinct",
        ),
        (
            lambda t: t.group_by("region", domain=[(1, 2)]).agg(n=("views", "count")),
            ValueError,
            "1 key value",
        ),
        (lambda t: t.group_by("region").agg(), ValueError, "at least one aggregation"),
        (lambda t: t.group_by("region").agg(region=("views", "sum")), ValueError, "collides"),
        (lambda t: t.group_by("region").agg(n="views"), ValueError, "(column, function) pair"),
    ],
    ids=[
        "unknown-key",
        "unknown-column",
        "unknown-function",
        "domain-and-max-groups",
        "max-groups-zero",
        "duplicate-domain",
        "domain-arity",
        "no-aggregation",
        "name-collision",
        "not-a-pair",
    ],
)
def test_misuse_raises_a_clear_error(
    program: Callable[[SecretTable], Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=re.escape(message)):
        run_misuse(program)


def test_a_secret_table_has_no_truth_value() -> None:
    def program(table: SecretTable) -> None:
        if table.group_by("region").agg(n=("views", "count")):
            pass

    with pytest.raises(TypeError, match="no truth value"):
        run_misuse(program)


# -- padding that is correct (issue 13) -------------------------------------------------------


def test_domain_restricts_the_keys_rows_outside_it_form_no_group() -> None:
    # regression: domain [2, 3] over keys 0..3 returned keys 0 and 1
    frame = pd.DataFrame({"region": [0, 1, 2, 3, 3, 0, 1, 1], "views": [5, 6, 7, 8, 9, 10, 11, 12]})
    frame["price"] = 0.25
    aggregations = {"total": ("views", "sum"), "n": ("views", "count"), "top": ("views", "max")}

    got = run_on_table(3, frame, SPECS, group_all("region", aggregations, domain=[3, 2]))

    assert_matches(got, expected_over_domain(frame, "region", [2, 3], aggregations, None))


@pytest.mark.parametrize("parties", [2, 3])
def test_domain_keys_between_and_around_keys_outside_it(parties: int) -> None:
    rng = np.random.default_rng(parties)
    frame = make_frame(rows_for(parties), regions=12, seed=parties + 30)
    valid = rng.integers(0, 2, len(frame))
    domain = [1, 4, 5, 11, 13, 14]  # 13 and 14 occur in no row

    got = run_on_table(
        parties, frame, SPECS, group_all("region", ALL_FUNCTIONS, domain=domain), valid=valid
    )

    assert_matches(got, expected_over_domain(frame, "region", domain, ALL_FUNCTIONS, valid))


def test_max_groups_tells_the_recipient_when_groups_were_dropped() -> None:
    # regression: max_groups silently dropped the groups beyond G
    from tally.mpc.table import GroupsDropped

    frame = pd.DataFrame({"region": [0, 1, 2, 3, 4], "views": [1, 2, 3, 4, 5], "price": 0.5})
    aggregations = {"n": ("views", "count")}

    with pytest.warns(GroupsDropped, match="more groups than max_groups"):
        got = run_on_table(3, frame, SPECS, group_all("region", aggregations, max_groups=3))
    np.testing.assert_array_equal(got["region"], [0, 1, 2])

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", GroupsDropped)
        exact = run_on_table(3, frame, SPECS, group_all("region", aggregations, max_groups=5))
    assert_matches(exact, expected_groupby(frame, ["region"], aggregations))


def test_reveal_never_opens_what_an_invalid_row_holds() -> None:
    # regression: reveal opened invalid rows to every party before dropping them
    frame = pd.DataFrame({"region": [1, 2, 3], "views": [111, 222, 333], "price": 0.5})

    got = run_on_table(2, frame, SPECS, lambda t: t.reveal(drop_invalid=False), valid=[1, 0, 1])

    np.testing.assert_array_equal(got["views"], [111, 0, 333])
    np.testing.assert_array_equal(got["region"], [1, 0, 3])
    np.testing.assert_array_equal(got["price"], [0.5, 0, 0.5])
    np.testing.assert_array_equal(got["valid"], [1, 0, 1])


@pytest.mark.parametrize("options", [{}, {"max_groups": 12}, {"domain": list(range(12))}], ids=str)
def test_min_group_size_suppresses_small_groups_inside_mpc(options: dict[str, Any]) -> None:
    frame = make_frame(rows_for(3), regions=10, seed=77)
    valid = np.random.default_rng(77).integers(0, 2, len(frame))
    aggregations = {"total": ("views", "sum"), "n": ("views", "count"), "hi": ("views", "max")}
    sizes = frame[valid == 1].groupby("region").size()
    k = int(np.median(sizes))  # some groups above, some below

    got = run_on_table(
        3,
        frame,
        SPECS,
        group_all("region", aggregations, min_group_size=k, **options),
        valid=valid,
    )

    expected = expected_groupby(frame, ["region"], aggregations, valid)
    expected = expected[expected["n"] >= k].reset_index(drop=True)
    assert 0 < len(expected) < len(sizes)
    assert_matches(got, expected)


# -- through the quicksort ---------------------------------------------------------------------


@pytest.mark.parametrize("method", ["quick", "radix"])
@pytest.mark.parametrize(
    "options", [{}, {"max_groups": 9}, {"domain": [0, 2, 4, 6, 11]}], ids=["plain", "max", "dom"]
)
def test_every_function_through_either_sort(
    method: str, options: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The chooser picks radix at test sizes; forced either way, every sort agrees with pandas."""
    import tally.mpc.sorting as sorting

    chosen: list[str] = []

    def forced(widths: Sequence[int], rows: int) -> str:
        chosen.append(method)
        return method

    monkeypatch.setattr(sorting, "choose_sort", forced)
    frame = make_frame(200, regions=7, seed=51)
    valid = (np.random.default_rng(51).random(200) < 0.7).astype(int)

    got = run_on_table(3, frame, SPECS, group_all("region", ALL_FUNCTIONS, **options), valid=valid)

    expected = expected_groupby(frame, ["region"], ALL_FUNCTIONS, valid)
    if "domain" in options:
        expected = expected_over_domain(frame, "region", options["domain"], ALL_FUNCTIONS, valid)
    assert_matches(got, expected)
    assert len(chosen) >= 3 * 5  # key sort and four min/max sorts at each of 3 parties
