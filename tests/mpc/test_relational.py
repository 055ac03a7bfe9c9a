"""Tests for tally.mpc.relational: filters, derived columns, the PK-FK join, join + group-by.

Every result is opened and checked against pandas, with 2 and 3 parties and dealer tuples.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest
from tests.mpc.tables import run_frame_at_every_party

from tally.mpc.party import Party
from tally.mpc.relational import (
    DuplicateKeys,
    between,
    derive,
    filter_rows,
    isin,
    join_group_by,
    pk_fk_join,
)
from tally.mpc.relational.filters import both, either, negate
from tally.mpc.simulate import run_parties
from tally.mpc.table import ColumnSpec, SecretTable, share_table, table_from_share_set

PARTIES = pytest.mark.parametrize("parties", [2, 3])
SPECS = {
    "region": ColumnSpec("key", bits=4),
    "age": ColumnSpec("int"),
    "price": ColumnSpec("fixed"),
}


def frame(rows: int = 80, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "region": rng.integers(0, 6, rows),
            "age": rng.integers(-20, 90, rows),
            "price": rng.integers(-4000, 4000, rows) / 64.0,
        }
    )


def opened(result: dict[str, Any]) -> pd.DataFrame:
    return pd.DataFrame({k: v for k, v in result.items()})


PREDICATES: dict[str, tuple[Callable[[SecretTable], Any], Callable[[pd.DataFrame], Any]]] = {
    "lt": (lambda t: t["age"] < 18, lambda f: f.age < 18),
    "le": (lambda t: t["age"] <= 18, lambda f: f.age <= 18),
    "gt": (lambda t: t["price"] > 1.5, lambda f: f.price > 1.5),
    "ge": (lambda t: t["age"] >= 0, lambda f: f.age >= 0),
    "eq": (lambda t: t["region"] == 3, lambda f: f.region == 3),
    "ne": (lambda t: t["region"] != 3, lambda f: f.region != 3),
    "col-vs-col": (lambda t: t["age"] < t["price"], lambda f: f.age < f.price),
    "between": (lambda t: between(t["age"], 18, 65), lambda f: f.age.between(18, 65)),
    "isin": (lambda t: isin(t["region"], [0, 2, 5]), lambda f: f.region.isin([0, 2, 5])),
    "isin-empty": (lambda t: isin(t["region"], []), lambda f: f.region.isin([])),
    "and-or-not": (
        lambda t: either(both(t["age"] >= 18, t["region"] == 1), negate(t["price"] < 0)),
        lambda f: ((f.age >= 18) & (f.region == 1)) | ~(f.price < 0),
    ),
}


@PARTIES
@pytest.mark.parametrize("name", sorted(PREDICATES))
def test_filter_matches_pandas(parties: int, name: str) -> None:
    data = frame()
    secret, plain = PREDICATES[name]
    results = run_frame_at_every_party(
        parties, data, SPECS, lambda t: filter_rows(t, secret(t)).reveal()
    )
    expected = data[plain(data)].reset_index(drop=True)
    for result in results:
        pd.testing.assert_frame_equal(opened(result), expected, check_dtype=False)


@PARTIES
def test_filter_then_group_by_counts_only_valid_rows(parties: int) -> None:
    data = frame(120)

    def program(t: SecretTable) -> dict[str, Any]:
        kept = filter_rows(t, t["age"] >= 18)
        return kept.group_by("region").agg(n=("age", "count"), total=("price", "sum")).reveal()

    expected = (
        data[data.age >= 18]
        .groupby("region", as_index=False)
        .agg(n=("age", "count"), total=("price", "sum"))
    )
    for result in run_frame_at_every_party(parties, data, SPECS, program):
        got = opened(result).sort_values("region").reset_index(drop=True)
        pd.testing.assert_frame_equal(got, expected, check_dtype=False)


@PARTIES
def test_filter_on_empty_table(parties: int) -> None:
    data = frame(0)
    results = run_frame_at_every_party(
        parties, data, SPECS, lambda t: filter_rows(t, t["age"] > 3).reveal()
    )
    for result in results:
        assert all(len(v) == 0 for v in result.values())


@PARTIES
def test_derived_columns_match_pandas(parties: int) -> None:
    data = frame()

    def program(t: SecretTable) -> dict[str, Any]:
        return derive(
            t,
            {
                "spend": (t["price"] * t["age"], ColumnSpec("fixed")),
                "older": (t["age"] * 3 + 2, ColumnSpec("int")),
                "gap": (t["price"] - t["age"], ColumnSpec("fixed")),
            },
        ).reveal()

    expected = data.assign(
        spend=data.price * data.age, older=data.age * 3 + 2, gap=data.price - data.age
    )
    for result in run_frame_at_every_party(parties, data, SPECS, program):
        pd.testing.assert_frame_equal(opened(result), expected, check_dtype=False)


def test_derive_and_filter_refuse_bad_input() -> None:
    data = frame(10)

    def unknown(t: SecretTable) -> Any:
        return filter_rows(t, t["nope"] > 1)

    with pytest.raises(KeyError, match="unknown column 'nope'"):
        run_frame_at_every_party(2, data, SPECS, unknown)

    def mismatch(t: SecretTable) -> Any:
        return derive(t, {"x": (t["price"] * 2, ColumnSpec("int"))})

    with pytest.raises(ValueError, match="fractional bits"):
        run_frame_at_every_party(2, data, SPECS, mismatch)


# -- joins ------------------------------------------------------------------------------

USER_SPECS = {"user": ColumnSpec("int"), "amount": ColumnSpec("int")}
VIEW_SPECS = {"user": ColumnSpec("int"), "campaign": ColumnSpec("key", bits=3)}


def run_two_tables(
    parties: int,
    left: pd.DataFrame,
    right: pd.DataFrame,
    program: Callable[[SecretTable, SecretTable], Any],
    replicated: bool = False,
) -> list[Any]:
    rng = np.random.default_rng(5)
    left_shares = share_table(
        {c: left[c].to_numpy() for c in USER_SPECS}, USER_SPECS, parties, rng=rng
    )
    right_shares = share_table(
        {c: right[c].to_numpy() for c in VIEW_SPECS}, VIEW_SPECS, parties, rng=rng
    )

    def run(party: Party) -> Any:
        return program(
            table_from_share_set(party, left_shares[party.id], USER_SPECS),
            table_from_share_set(party, right_shares[party.id], VIEW_SPECS),
        )

    return run_parties(parties, run, seed=2024, timeout=60.0, replicated=replicated)


def advertisers(users: np.ndarray, seed: int = 3) -> pd.DataFrame:  # type: ignore[type-arg]
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"user": users, "amount": rng.integers(-50, 500, len(users))})


def publishers(users: np.ndarray, seed: int = 4) -> pd.DataFrame:  # type: ignore[type-arg]
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"user": users, "campaign": rng.integers(0, 8, len(users))})


def join_case(name: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(11)
    if name == "some":
        unique = rng.permutation(np.arange(-30, 60))[:40]
        return advertisers(unique), publishers(rng.integers(-40, 70, 70))
    if name == "none":
        return advertisers(np.arange(0, 20)), publishers(np.arange(100, 130))
    if name == "all":
        unique = np.arange(10, 30)
        return advertisers(unique), publishers(rng.choice(unique, 45))
    if name == "near-2^62":
        top = (1 << 62) - 1
        unique = np.array([top, top - 1, -top, -top + 5, 0, 7], np.int64)
        many = np.array([top, -top, top, 7, 8, -top + 5, top - 2], np.int64)
        return advertisers(unique), publishers(many)
    if name == "empty-unique":
        return advertisers(np.zeros(0, np.int64)), publishers(np.arange(5))
    if name == "empty-many":
        return advertisers(np.arange(5)), publishers(np.zeros(0, np.int64))
    if name == "both-empty":
        return advertisers(np.zeros(0, np.int64)), publishers(np.zeros(0, np.int64))
    raise AssertionError(name)


JOIN_CASES = ["some", "none", "all", "near-2^62", "empty-unique", "empty-many", "both-empty"]


def by_rows(frame_: pd.DataFrame) -> pd.DataFrame:
    columns = sorted(frame_.columns)
    return frame_[columns].sort_values(columns).reset_index(drop=True).astype(np.int64)


@PARTIES
@pytest.mark.parametrize("case", JOIN_CASES)
def test_inner_join_matches_pandas(parties: int, case: str) -> None:
    left, right = join_case(case)
    results = run_two_tables(parties, left, right, lambda u, m: pk_fk_join(u, m, "user").reveal())
    expected = right.merge(left, on="user", how="inner")
    for result in results:
        pd.testing.assert_frame_equal(by_rows(opened(result)), by_rows(expected))


@PARTIES
def test_join_output_has_the_many_sides_rows_and_drops_invalid(parties: int) -> None:
    left, right = join_case("all")
    results = run_two_tables(
        parties,
        left,
        right,
        lambda u, m: pk_fk_join(filter_rows(u, u["amount"] > 100), m, "user").reveal(
            drop_invalid=False
        ),
    )
    kept = left[left.amount > 100]
    expected = right.merge(kept, on="user", how="inner")
    for result in results:
        frame_ = opened(result)
        assert len(frame_) == len(right)
        got = frame_[frame_.valid == 1].drop(columns="valid")
        pd.testing.assert_frame_equal(by_rows(got), by_rows(expected))


@PARTIES
def test_duplicate_unique_keys_are_refused(parties: int) -> None:
    left = advertisers(np.array([1, 2, 3, 2, 5]))
    right = publishers(np.array([1, 2, 2]))
    with pytest.raises(DuplicateKeys, match="more than once"):
        run_two_tables(parties, left, right, lambda u, m: pk_fk_join(u, m, "user").reveal())


def test_duplicate_among_invalid_rows_is_not_a_duplicate() -> None:
    left = advertisers(np.array([1, 2, 3, 2]))
    right = publishers(np.array([1, 2, 2, 3]))

    def program(u: SecretTable, m: SecretTable) -> Any:
        return pk_fk_join(filter_rows(u, u["amount"] != int(left.amount[3])), m, "user").reveal()

    expected = right.merge(left.iloc[:3], on="user", how="inner")
    for result in run_two_tables(2, left, right, program):
        pd.testing.assert_frame_equal(by_rows(opened(result)), by_rows(expected))


def test_join_refuses_bad_input() -> None:
    left, right = join_case("some")
    with pytest.raises(KeyError, match="unknown column 'uid'"):
        run_two_tables(2, left, right, lambda u, m: pk_fk_join(u, m, "uid"))
    with pytest.raises(ValueError, match="differs between the sides"):
        run_two_tables(
            2,
            left,
            right,
            lambda u, m: pk_fk_join(
                u.with_columns({"k": u["amount"]}, {"k": ColumnSpec("int")}),
                m.with_columns({"k": m["campaign"]}, {"k": ColumnSpec("key", bits=3)}),
                "k",
            ),
        )


@PARTIES
@pytest.mark.parametrize("case", ["some", "none", "all", "empty-unique"])
def test_join_then_group_by_matches_pandas(parties: int, case: str) -> None:
    left, right = join_case(case)

    def program(u: SecretTable, m: SecretTable) -> Any:
        return join_group_by(
            u,
            m,
            "user",
            "campaign",
            {"spend": ("amount", "sum"), "n": ("amount", "count")},
            domain=list(range(8)),
        ).reveal()

    merged = right.merge(left, on="user", how="inner")
    expected = (
        merged.groupby("campaign")
        .agg(spend=("amount", "sum"), n=("amount", "count"))
        .reindex(range(8), fill_value=0)
        .reset_index()
    )
    for result in run_two_tables(parties, left, right, program):
        got = opened(result).sort_values("campaign").reset_index(drop=True)
        pd.testing.assert_frame_equal(got, expected, check_dtype=False)


def test_duplicate_around_an_invalid_row_is_refused() -> None:
    left = advertisers(np.array([2, 2, 2, 4]))
    right = publishers(np.array([2, 4]))

    def program(u: SecretTable, m: SecretTable) -> Any:
        return pk_fk_join(filter_rows(u, u["amount"] != int(left.amount[1])), m, "user")

    with pytest.raises(DuplicateKeys):
        run_two_tables(3, left, right, program)


# -- the logical plan ---------------------------------------------------------------------

from tally.mpc.relational import plan as lp  # noqa: E402

ATTRIBUTION = lp.Aggregate(
    lp.Derive(
        lp.Filter(
            lp.Join(lp.Scan("advertiser"), lp.Scan("publisher"), "user"),
            lp.Binary(
                "&",
                lp.Binary(">", lp.Col("amount"), lp.Lit(0)),
                lp.Not(lp.IsIn(lp.Col("campaign"), (6,))),
            ),
        ),
        "double",
        lp.Binary("*", lp.Col("amount"), lp.Lit(2)),
    ),
    ("campaign",),
    (("spend", "double", "sum"), ("n", "amount", "count")),
    domain=tuple(range(8)),
)


def test_plan_json_round_trips_and_hash_is_canonical() -> None:
    text = lp.to_json(ATTRIBUTION)
    assert lp.from_json(text) == ATTRIBUTION
    assert lp.plan_hash(lp.from_json(text)) == lp.plan_hash(ATTRIBUTION)
    other = lp.Aggregate(
        ATTRIBUTION.input, ("campaign",), (("spend", "double", "sum"),), ATTRIBUTION.domain
    )
    assert lp.plan_hash(other) != lp.plan_hash(ATTRIBUTION)
    assert " " not in text and text == lp.to_json(lp.from_json(text))


@PARTIES
def test_plan_executes_like_pandas(parties: int) -> None:
    left, right = join_case("some")

    def program(u: SecretTable, m: SecretTable) -> Any:
        return lp.execute(ATTRIBUTION, {"advertiser": u, "publisher": m}).reveal()

    merged = right.merge(left, on="user", how="inner")
    merged = merged[(merged.amount > 0) & ~merged.campaign.isin([6])].assign(
        double=lambda f: f.amount * 2
    )
    expected = (
        merged.groupby("campaign")
        .agg(spend=("double", "sum"), n=("amount", "count"))
        .reindex(range(8), fill_value=0)
        .reset_index()
    )
    for result in run_two_tables(parties, left, right, program):
        got = opened(result).sort_values("campaign").reset_index(drop=True)
        pd.testing.assert_frame_equal(got, expected, check_dtype=False)


SCHEMAS = {"advertiser": USER_SPECS, "publisher": VIEW_SPECS}


@pytest.mark.parametrize(
    ("plan", "message"),
    [
        (lp.Filter(lp.Scan("advertiser"), lp.Binary(">", lp.Col("age"), lp.Lit(1))), "'age'"),
        (lp.Scan("nobody"), "unknown table 'nobody'"),
        (lp.Join(lp.Scan("advertiser"), lp.Scan("publisher"), "uid"), "join column 'uid'"),
        (
            lp.Aggregate(lp.Scan("publisher"), ("campaign",), (("x", "user", "median"),)),
            "'median' is not supported",
        ),
        (
            lp.Derive(lp.Scan("advertiser"), "x", lp.Binary("^", lp.Col("amount"), lp.Lit(1))),
            "operator '\\^'",
        ),
        (lp.Derive(lp.Scan("advertiser"), "x", lp.Lit(3)), "does not use any column"),
        (
            lp.Derive(lp.Scan("advertiser"), "x", lp.Col("amount"), kind="fixed"),
            "declared fixed",
        ),
    ],
)
def test_bad_plans_are_refused_before_running(plan: Any, message: str) -> None:
    with pytest.raises(lp.PlanError, match=message):
        lp.check(plan, SCHEMAS)

    def program(u: SecretTable, m: SecretTable) -> Any:
        return lp.execute(plan, {"advertiser": u, "publisher": m})

    left, right = join_case("some")
    with pytest.raises(lp.PlanError):
        run_two_tables(2, left, right, program)


def test_malformed_plan_json_is_refused() -> None:
    with pytest.raises(lp.PlanError, match="unknown plan node"):
        lp.from_json('{"type": "Window", "input": null}')
    with pytest.raises(lp.PlanError, match="no field"):
        lp.from_json('{"type": "Scan", "table": "a", "rows": 3}')
    with pytest.raises(lp.PlanError, match="JSON"):
        lp.from_json("SELECT 1")


@PARTIES
@pytest.mark.parametrize("case", ["some", "none", "all", "empty-unique", "near-2^62"])
def test_left_join_matches_pandas(parties: int, case: str) -> None:
    left, right = join_case(case)
    results = run_two_tables(
        parties, left, right, lambda u, m: pk_fk_join(u, m, "user", how="left").reveal()
    )
    merged = right.merge(left, on="user", how="left", indicator=True)
    expected = merged.assign(
        amount=merged.amount.fillna(0), matched=(merged._merge == "both").astype(np.int64)
    ).drop(columns="_merge")
    for result in results:
        pd.testing.assert_frame_equal(by_rows(opened(result)), by_rows(expected))


def test_unknown_join_kind_is_refused() -> None:
    left, right = join_case("some")
    with pytest.raises(ValueError, match="how='outer' is not supported"):
        run_two_tables(2, left, right, lambda u, m: pk_fk_join(u, m, "user", how="outer"))
