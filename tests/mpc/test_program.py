"""Tests for tally.mpc.program and tally.mpc.programs: programs over SecretTables vs pandas."""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tally.mpc.party import Party
from tally.mpc.program import Program, get_program, program, registered_programs
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


def make_frame(rows: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "region": rng.integers(0, 6, rows),
            "views": rng.integers(-50, 500, rows),
            "price": rng.integers(-900, 900, rows) / 8.0,
        }
    )
    valid = (rng.random(rows) < 0.85).astype(int)
    valid[frame.drop_duplicates("region").index] = 1  # every key keeps a real row
    return frame, valid


def run_program(
    parties: int,
    chosen: Program,
    inputs: Mapping[str, tuple[pd.DataFrame, np.ndarray]],
    seed: int | None = 2024,
    **params: Any,
) -> dict[str, dict[str, np.ndarray]]:
    """Share each input, run the program at every party, reveal its outputs; parties agree."""
    shares = {
        name: share_table(
            {c: frame[c].to_numpy() for c in SPECS},
            SPECS,
            parties,
            valid=valid,
            rng=np.random.default_rng(i),
        )
        for i, (name, (frame, valid)) in enumerate(inputs.items())
    }

    def run(party: Party) -> dict[str, dict[str, np.ndarray]]:
        tables = {
            name: table_from_share_set(party, s[party.id], SPECS) for name, s in shares.items()
        }
        return {name: out.reveal() for name, out in chosen(tables, **params).items()}

    results = run_parties(parties, run, seed=seed, timeout=TIMEOUT)
    for other in results[1:]:
        assert list(other) == list(results[0])
        for name, output in other.items():
            assert list(output) == list(results[0][name])
            for column in output:
                np.testing.assert_array_equal(output[column], results[0][name][column])
    return results[0]


def real(frame: pd.DataFrame, valid: np.ndarray) -> pd.DataFrame:
    return frame.iloc[np.flatnonzero(valid == 1)]


def assert_matches(got: Mapping[str, np.ndarray], expected: pd.DataFrame) -> None:
    assert list(got) == list(expected.columns)
    for name in expected.columns:
        np.testing.assert_allclose(
            np.asarray(got[name], float),
            expected[name].to_numpy(float),
            rtol=0,
            atol=1e-9,
            err_msg=name,
        )


# -- a custom program ------------------------------------------------------------------------------


@program("test_region_report")
def region_report(
    tables: Mapping[str, SecretTable], *, column: str, top: int
) -> dict[str, SecretTable]:
    """Per-region totals of two shops, and the first shop sorted by a column, descending."""
    shop_a, shop_b = tables["shop_a"], tables["shop_b"]
    outputs = {
        "a_by_region": shop_a.group_by("region", max_groups=top).agg(
            total=(column, "sum"), n=(column, "count"), avg=("price", "mean")
        ),
        "b_by_region": shop_b.group_by("region").agg(hi=(column, "max"), lo=("price", "min")),
        "a_sorted": shop_a.sort_by([column], descending=True),
    }
    return outputs


@PARTY_COUNTS
@TUPLE_SOURCES
def test_a_custom_program_runs_at_every_party_and_matches_pandas(
    parties: int, seed: int | None
) -> None:
    rows = 40 if parties >= 5 else 200
    shop_a, shop_b = make_frame(rows, seed=1), make_frame(rows, seed=2)

    got = run_program(
        parties,
        get_program("test_region_report"),
        {"shop_a": shop_a, "shop_b": shop_b},
        seed=seed,
        column="views",
        top=8,
    )

    a, b = real(*shop_a), real(*shop_b)
    assert_matches(
        got["a_by_region"],
        a.groupby("region")
        .agg(total=("views", "sum"), n=("views", "count"), avg=("price", "mean"))
        .reset_index(),
    )
    assert_matches(
        got["b_by_region"],
        b.groupby("region").agg(hi=("views", "max"), lo=("price", "min")).reset_index(),
    )
    assert_matches(got["a_sorted"], a.sort_values("views", ascending=False, kind="stable"))


def test_the_decorator_registers_by_name_and_by_source_hash() -> None:
    digest = hashlib.sha256(inspect.getsource(region_report.function).encode()).hexdigest()

    assert isinstance(region_report, Program)
    assert region_report.name == "test_region_report"
    assert region_report.digest == digest
    assert get_program(digest) is region_report
    assert get_program("test_region_report") is region_report
    assert registered_programs()["test_region_report"] is region_report


def test_registering_another_function_under_a_taken_name_is_refused() -> None:
    with pytest.raises(ValueError, match="already registered"):

        @program("test_region_report")
        def impostor(tables: Mapping[str, SecretTable]) -> dict[str, SecretTable]:
            return dict(tables)

    assert get_program("test_region_report") is region_report


def test_the_name_defaults_to_the_function_name() -> None:
    @program()
    def test_identity_program(tables: Mapping[str, SecretTable]) -> dict[str, SecretTable]:
        return dict(tables)

    assert get_program("test_identity_program") is test_identity_program


def test_a_program_must_return_tables() -> None:
    @program("test_returns_a_column")
    def returns_a_column(tables: Mapping[str, SecretTable]) -> Any:
        return {"total": tables["shop"].sum("views")}

    with pytest.raises(TypeError, match="mapping of name -> SecretTable"):
        run_program(2, returns_a_column, {"shop": make_frame(5, seed=3)})


def test_unknown_programs_raise_key_error() -> None:
    with pytest.raises(KeyError, match="unknown program 'no_such_program'"):
        get_program("no_such_program")
    with pytest.raises(KeyError, match="unknown program"):
        get_program("0" * 64)


# -- built-in programs -----------------------------------------------------------------------------


def test_the_built_ins_are_registered_with_their_source_hash() -> None:
    builtins = registered_programs()
    for name in ("groupby", "sort", "sum", "count"):
        chosen = get_program(name)
        assert builtins[name] is chosen
        assert get_program(chosen.digest) is chosen
        assert (
            chosen.digest == hashlib.sha256(inspect.getsource(chosen.function).encode()).hexdigest()
        )


@PARTY_COUNTS
def test_builtin_groupby(parties: int) -> None:
    shop = make_frame(40 if parties >= 5 else 200, seed=4)
    aggregations = {
        "total": ["views", "sum"],
        "n": ["views", "count"],
        "avg": ["price", "mean"],
        "lo": ["views", "min"],
        "hi": ["price", "max"],
    }  # lists, as JSON gives them

    got = run_program(
        parties, get_program("groupby"), {"shop": shop}, keys=["region"], aggregations=aggregations
    )

    expected = (
        real(*shop)
        .groupby("region")
        .agg(**{name: tuple(spec) for name, spec in aggregations.items()})
        .reset_index()
    )
    assert list(got) == ["result"]
    assert_matches(got["result"], expected)


def test_builtin_groupby_with_a_domain() -> None:
    shop = make_frame(100, seed=5)
    domain = list(range(10))

    got = run_program(
        3,
        get_program("groupby"),
        {"shop": shop},
        keys=["region"],
        aggregations={"n": ["views", "count"], "total": ["views", "sum"]},
        domain=domain,
    )

    expected = real(*shop).groupby("region").agg(n=("views", "count"), total=("views", "sum"))
    expected = expected.reindex(domain, fill_value=0).rename_axis("region").reset_index()
    assert_matches(got["result"], expected)


@pytest.mark.parametrize("descending", [False, True], ids=["ascending", "descending"])
@pytest.mark.parametrize("parties", [2, 3])
def test_builtin_sort(parties: int, descending: bool) -> None:
    shop = make_frame(150, seed=6)

    got = run_program(
        parties,
        get_program("sort"),
        {"shop": shop},
        keys=["region", "views"],
        descending=descending,
    )

    expected = real(*shop).sort_values(["region", "views"], ascending=not descending, kind="stable")
    assert_matches(got["result"], expected)


@PARTY_COUNTS
@TUPLE_SOURCES
def test_builtin_sum_and_count(parties: int, seed: int | None) -> None:
    shop = make_frame(100, seed=7)
    frame = real(*shop)

    views = run_program(parties, get_program("sum"), {"shop": shop}, seed=seed, column="views")
    price = run_program(parties, get_program("sum"), {"shop": shop}, seed=seed, column="price")
    count = run_program(parties, get_program("count"), {"shop": shop}, seed=seed)

    np.testing.assert_array_equal(views["result"]["views"], [frame.views.sum()])
    assert views["result"]["views"].dtype.kind == "i"
    np.testing.assert_array_equal(price["result"]["price"], [frame.price.sum()])
    assert price["result"]["price"].dtype == np.float64
    np.testing.assert_array_equal(count["result"]["count"], [len(frame)])


def test_builtins_take_exactly_one_input_table() -> None:
    shop = make_frame(5, seed=8)

    with pytest.raises(ValueError, match="one input table, got 2"):
        run_program(2, get_program("count"), {"a": shop, "b": shop})
