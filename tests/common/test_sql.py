"""The SQL front end: statements compiled to plans, run on the engine, against pandas;
every unsupported construct refused by name before anything runs."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from tally.common.sql import SqlError, compile_sql
from tally.mpc.party import Party
from tally.mpc.relational.plan import execute, from_json, to_json
from tally.mpc.simulate import run_parties
from tally.mpc.table import ColumnSpec, share_table, table_from_share_set

VIEWS = {"user": ColumnSpec("int"), "campaign": ColumnSpec("key", bits=3), "age": ColumnSpec("int")}
BUYS = {"user": ColumnSpec("int"), "price": ColumnSpec("fixed"), "qty": ColumnSpec("int")}
SCHEMAS = {
    "views": {name: spec.kind for name, spec in VIEWS.items()},
    "buys": {name: spec.kind for name, spec in BUYS.items()},
}


def frames() -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(21)
    users = rng.permutation(300)[:120]
    buys = pd.DataFrame(
        {
            "user": users,
            "price": rng.integers(-400, 4000, 120) / 8.0,
            "qty": rng.integers(1, 9, 120),
        }
    )
    views = pd.DataFrame(
        {
            "user": rng.choice(np.concatenate([users, 1000 + np.arange(30)]), 200),
            "campaign": rng.integers(0, 6, 200),
            "age": rng.integers(12, 80, 200),
        }
    )
    return {"views": views, "buys": buys}


def run_sql(sql: str, parties: int = 2) -> pd.DataFrame:
    compiled = compile_sql(sql, SCHEMAS)
    plan = from_json(to_json(compiled.plan))  # what travels in the job spec
    data = frames()
    specs = {"views": VIEWS, "buys": BUYS}
    rng = np.random.default_rng(3)
    shares = {
        name: share_table(
            {c: data[name][c].to_numpy() for c in specs[name]}, specs[name], parties, rng=rng
        )
        for name in compiled.tables
    }

    def program(party: Party) -> Any:
        tables = {
            name: table_from_share_set(party, shares[name][party.id], specs[name])
            for name in compiled.tables
        }
        return execute(plan, tables).reveal()

    first, *others = run_parties(parties, program, seed=7, timeout=60.0)
    for other in others:
        assert all(np.array_equal(first[k], other[k]) for k in first)
    return (
        pd.DataFrame({c: first[c] for c in compiled.columns})
        .sort_values(list(compiled.keys))
        .reset_index(drop=True)
    )


def expect(frame: pd.DataFrame, keys: list[str], **aggregations: tuple[str, str]) -> pd.DataFrame:
    out = frame.groupby(keys, as_index=False).agg(**aggregations)
    return out.sort_values(keys).reset_index(drop=True)


@pytest.mark.parametrize("parties", [2, 3])
def test_join_filter_group_by_matches_pandas(parties: int) -> None:
    got = run_sql(
        "SELECT campaign, SUM(qty) AS units, COUNT(*) AS n, MAX(price) AS top "
        "FROM views JOIN buys USING (user) WHERE age >= 18 AND qty BETWEEN 2 AND 7 "
        "GROUP BY campaign",
        parties,
    )
    data = frames()
    merged = data["views"].merge(data["buys"], on="user")
    kept = merged[(merged["age"] >= 18) & merged["qty"].between(2, 7)]
    expected = expect(
        kept, ["campaign"], units=("qty", "sum"), n=("qty", "count"), top=("price", "max")
    )
    np.testing.assert_array_equal(got["campaign"], expected["campaign"])
    np.testing.assert_array_equal(got["units"], expected["units"])
    np.testing.assert_array_equal(got["n"], expected["n"])
    np.testing.assert_allclose(got["top"], expected["top"])


def test_single_table_in_or_not_and_a_computed_sum() -> None:
    got = run_sql(
        "SELECT campaign, AVG(age), SUM(age * 2 + 1) AS weighted FROM views "
        "WHERE campaign IN (1, 3, 4) OR NOT (age < 65) GROUP BY campaign"
    )
    views = frames()["views"]
    kept = views[views["campaign"].isin([1, 3, 4]) | ~(views["age"] < 65)].assign(
        weighted=lambda f: f["age"] * 2 + 1
    )
    expected = expect(kept, ["campaign"], mean_age=("age", "mean"), weighted=("weighted", "sum"))
    np.testing.assert_array_equal(got["campaign"], expected["campaign"])
    np.testing.assert_allclose(got["mean_age"], expected["mean_age"])
    np.testing.assert_array_equal(got["weighted"], expected["weighted"])


def test_variance_and_stddev_of_a_join_match_pandas() -> None:
    """Issue 15 item 4: VARIANCE/VAR_SAMP and STDDEV are pandas' var and std (ddof 1)."""
    got = run_sql(
        "SELECT campaign, VARIANCE(qty) AS v, VAR_SAMP(age) AS va, STDDEV(qty) AS s "
        "FROM views JOIN buys USING (user) GROUP BY campaign",
        3,
    )
    data = frames()
    merged = data["views"].merge(data["buys"], on="user")
    expected = expect(merged, ["campaign"], v=("qty", "var"), va=("age", "var"), s=("qty", "std"))
    np.testing.assert_array_equal(got["campaign"], expected["campaign"])
    for column in ("v", "va", "s"):
        np.testing.assert_allclose(got[column], expected[column], rtol=1e-12, err_msg=column)


def test_count_distinct_matches_pandas_nunique() -> None:
    got = run_sql(
        "SELECT campaign, COUNT(DISTINCT user) AS users, COUNT(*) AS n FROM views "
        "WHERE age >= 18 GROUP BY campaign",
        3,
    )
    views = frames()["views"]
    kept = views[views["age"] >= 18]
    expected = expect(kept, ["campaign"], users=("user", "nunique"), n=("user", "count"))
    np.testing.assert_array_equal(got["campaign"], expected["campaign"])
    np.testing.assert_array_equal(got["users"], expected["users"])
    np.testing.assert_array_equal(got["n"], expected["n"])


def test_having_keeps_the_groups_it_names_and_hides_the_rest() -> None:
    got = run_sql(
        "SELECT campaign, SUM(qty) AS units, COUNT(*) AS n FROM views JOIN buys USING (user) "
        "GROUP BY campaign HAVING COUNT(*) >= 25 AND units > 120"
    )
    data = frames()
    merged = data["views"].merge(data["buys"], on="user")
    grouped = expect(merged, ["campaign"], units=("qty", "sum"), n=("qty", "count"))
    expected = grouped[(grouped["n"] >= 25) & (grouped["units"] > 120)].reset_index(drop=True)
    assert 0 < len(expected) < len(grouped)  # the condition keeps some groups, not all
    pd.testing.assert_frame_equal(got.astype(np.int64), expected.astype(np.int64))
    for having, message in [
        ("HAVING MAX(age) > 3", "select that aggregate too"),
        ("HAVING age > 3", "use a group key or a selected aggregate"),
    ]:
        with pytest.raises(SqlError, match=message):
            compile_sql(f"SELECT campaign, COUNT(*) FROM views GROUP BY campaign {having}", SCHEMAS)


def test_join_on_and_a_fixed_point_product() -> None:
    got = run_sql(
        "SELECT campaign, SUM(price * qty) AS revenue FROM views "
        "JOIN buys ON views.user = buys.user GROUP BY campaign"
    )
    data = frames()
    merged = data["views"].merge(data["buys"], on="user").assign(r=lambda f: f["price"] * f["qty"])
    expected = expect(merged, ["campaign"], revenue=("r", "sum"))
    np.testing.assert_allclose(got["revenue"], expected["revenue"])


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        (
            "SELECT campaign, SUM(age) OVER (PARTITION BY campaign) FROM views GROUP BY campaign",
            "window functions are not supported",
        ),
        (
            "SELECT campaign, COUNT(*) FROM views GROUP BY campaign ORDER BY campaign",
            "ORDER BY is not supported",
        ),
        (
            "SELECT campaign, COUNT(*) FROM views GROUP BY campaign LIMIT 3",
            "LIMIT is not supported",
        ),
        (
            "SELECT campaign, COUNT(*) FROM views LEFT JOIN buys USING (user) GROUP BY campaign",
            "LEFT JOIN is not supported",
        ),
        (
            "SELECT campaign, COUNT(*) FROM views "
            "WHERE user IN (SELECT user FROM buys) GROUP BY campaign",
            "subqueries are not supported",
        ),
        ("SELECT SUM(age) FROM views", "needs GROUP BY"),
        ("SELECT campaign, age FROM views GROUP BY campaign", "neither grouped nor aggregated"),
        (
            "SELECT campaign, COUNT(DISTINCT user, age) FROM views GROUP BY campaign",
            "COUNT\\(DISTINCT column\\) only",
        ),
        (
            "SELECT campaign, SUM(DISTINCT age) FROM views GROUP BY campaign",
            "COUNT\\(DISTINCT column\\) only",
        ),
        ("SELECT campaign, COUNT(*) FROM views WHERE age IS NULL GROUP BY campaign", "no NULLs"),
        (
            "SELECT campaign, COUNT(*) FROM views WHERE campaign = 'summer' GROUP BY campaign",
            "compare with numbers",
        ),
        ("SELECT campaign, SUM(age / 2) FROM views GROUP BY campaign", "division is not supported"),
        ("SELECT campaign, VAR_POP(age) FROM views GROUP BY campaign", "population variance"),
        ("SELECT campaign, STDDEV_POP(age) FROM views GROUP BY campaign", "population variance"),
        ("DELETE FROM views", "only SELECT is supported"),
        ("SELECT campaign FROM views UNION SELECT campaign FROM buys", "UNION is not supported"),
        ("SELECT campaign, COUNT(*) FROM views GROUP BY campaign; SELECT 1", "exactly one SELECT"),
        ("SELEC campaign", "only SELECT is supported|not valid SQL"),
        (
            "SELECT campaign, COUNT(*) FROM views JOIN buys USING (nope) GROUP BY campaign",
            "no column 'nope' to join on",
        ),
    ],
)
def test_unsupported_sql_is_refused_by_name(sql: str, message: str) -> None:
    with pytest.raises(SqlError, match=message):
        compile_sql(sql, SCHEMAS)


def test_an_unknown_column_is_refused_by_the_plan_check_before_anything_runs() -> None:
    from tally.mpc.relational.plan import PlanError, check

    compiled = compile_sql("SELECT region, COUNT(*) FROM views GROUP BY region", SCHEMAS)
    with pytest.raises(PlanError, match="unknown group-by column 'region'"):
        check(compiled.plan, {"views": VIEWS})
