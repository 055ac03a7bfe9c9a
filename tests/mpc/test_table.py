"""Tests for tally.mpc.table: column specs, sharing, SecretTable, reveal, derived outputs."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd
import pytest
from tests.mpc.tables import run_frame_at_every_party

from tally.mpc.columns import SecretColumn
from tally.mpc.party import Party
from tally.mpc.ring import EncodingError, decode_fixed, decode_int, reconstruct
from tally.mpc.simulate import run_parties
from tally.mpc.table import (
    ColumnSpec,
    SecretTable,
    finish_derived,
    share_table,
)

PARTY_COUNTS = pytest.mark.parametrize("parties", [2, 3, 5])
TUPLE_SOURCES = pytest.mark.parametrize("seed", [2024, None], ids=["seeded-dealer", "os-dealer"])
TIMEOUT = 60.0

SPECS = {
    "region": ColumnSpec("key", bits=4),
    "views": ColumnSpec("int"),
    "price": ColumnSpec("fixed"),
}


def make_frame(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "region": rng.integers(0, 16, rows),
            "views": rng.integers(-(2**40), 2**40, rows),
            "price": rng.integers(-(2**20), 2**20, rows) / 256.0,
        }
    )


def run_on_table(
    parties: int,
    frame: pd.DataFrame,
    program: Callable[[SecretTable], Any],
    valid: Any = None,
    seed: int | None = 2024,
) -> list[Any]:
    return run_frame_at_every_party(
        parties, frame, SPECS, program, valid=valid, seed=seed, share_seed=1, timeout=TIMEOUT
    )


# -- ColumnSpec ------------------------------------------------------------------------------


def test_column_spec_defaults() -> None:
    assert ColumnSpec() == ColumnSpec("int", 0, 0)
    assert ColumnSpec("key").bits == 32
    assert ColumnSpec("fixed").frac_bits == 16
    assert ColumnSpec("fixed", frac_bits=8).frac_bits == 8
    assert ColumnSpec("int").sort_width == 63
    assert ColumnSpec("int", bits=10).sort_width == 10
    assert ColumnSpec("key", bits=5).sort_offset == 0
    assert ColumnSpec("int", bits=10).sort_offset == 512


@pytest.mark.parametrize(("kind", "bits"), [("text", 0), ("int", -1), ("int", 64), ("key", 100)])
def test_column_spec_rejects_unknown_kinds_and_widths(kind: str, bits: int) -> None:
    with pytest.raises(ValueError, match="kind|bit width"):
        ColumnSpec(kind, bits=bits)


@pytest.mark.parametrize(
    ("spec", "values"),
    [
        (ColumnSpec("key", bits=4), [0, 16]),
        (ColumnSpec("key", bits=4), [-1, 3]),
        (ColumnSpec("int", bits=8), [-129, 0]),
        (ColumnSpec("int", bits=8), [0, 128]),
        (ColumnSpec("int"), [2**62]),
        (ColumnSpec("int"), [0.5]),
        (ColumnSpec("fixed"), [np.nan]),
    ],
    ids=[
        "key-too-wide",
        "key-negative",
        "int-below-width",
        "int-above-width",
        "int-overflow",
        "int-fraction",
        "fixed-nan",
    ],
)
def test_encode_checks_the_declared_range(spec: ColumnSpec, values: list[Any]) -> None:
    with pytest.raises(EncodingError):
        spec.encode(np.array(values))


def test_encode_decode_round_trip_at_the_edges_of_the_range() -> None:
    cases = [
        (ColumnSpec("key", bits=4), np.array([0, 15])),
        (ColumnSpec("int", bits=8), np.array([-128, 127, 0])),
        (ColumnSpec("int"), np.array([-(2**62) + 1, 2**62 - 1])),
        (ColumnSpec("fixed"), np.array([-1.5, 0.0, 3.25, 2.0**-16])),
    ]
    for spec, values in cases:
        np.testing.assert_array_equal(spec.decode(spec.encode(values)), values)


# -- share_table -------------------------------------------------------------------------------


@PARTY_COUNTS
def test_share_table_splits_encoded_columns_and_valid(parties: int) -> None:
    frame = make_frame(50, seed=1)
    valid = np.random.default_rng(1).integers(0, 2, 50)

    shares = share_table(
        {c: frame[c].to_numpy() for c in SPECS},
        SPECS,
        parties,
        valid=valid,
        rng=np.random.default_rng(2),
    )

    assert len(shares) == parties
    assert all(set(share_set) == {*SPECS, "valid"} for share_set in shares)
    for name in SPECS:
        encoded = reconstruct([share_set[name] for share_set in shares])
        np.testing.assert_array_equal(SPECS[name].decode(encoded), frame[name].to_numpy())
    np.testing.assert_array_equal(decode_int(reconstruct([s["valid"] for s in shares])), valid)
    # a single share says nothing obvious: it is not the encoded column itself
    assert not np.array_equal(shares[0]["views"], SPECS["views"].encode(frame.views.to_numpy()))


def test_share_table_defaults_every_row_to_real() -> None:
    shares = share_table({"views": np.arange(4)}, {"views": ColumnSpec("int")}, 2)

    np.testing.assert_array_equal(decode_int(reconstruct([s["valid"] for s in shares])), 1)


@pytest.mark.parametrize(
    ("data", "valid", "error"),
    [
        ({"views": [1, 2], "nope": [1, 2]}, None, KeyError),
        ({"views": [1, 2], "price": [1.0]}, None, ValueError),
        ({"views": [1, 2]}, [1, 2], EncodingError),
    ],
    ids=["column-without-spec", "lengths-differ", "valid-not-a-bit"],
)
def test_share_table_rejects_bad_input(
    data: dict[str, Any], valid: Any, error: type[Exception]
) -> None:
    specs = {"views": ColumnSpec("int"), "price": ColumnSpec("fixed")}
    if "price" not in data:
        specs.pop("price")
    with pytest.raises(error):
        share_table({k: np.asarray(v) for k, v in data.items()}, specs, 2, valid=valid)


# -- SecretTable -------------------------------------------------------------------------------


@PARTY_COUNTS
@TUPLE_SOURCES
def test_reveal_returns_the_real_rows_or_everything(parties: int, seed: int | None) -> None:
    frame = make_frame(40 if parties >= 5 else 200, seed=parties)
    valid = (np.random.default_rng(parties).random(len(frame)) < 0.7).astype(int)

    results = run_on_table(
        parties, frame, lambda t: (t.reveal(), t.reveal(drop_invalid=False)), valid=valid, seed=seed
    )

    for real, everything in results:
        assert list(real) == list(SPECS)
        assert list(everything) == [*SPECS, "valid"]
        for name in SPECS:
            np.testing.assert_array_equal(real[name], frame[name].to_numpy()[valid == 1])
            # an invalid row's values are never opened: they come out as zeros
            np.testing.assert_array_equal(everything[name], frame[name].to_numpy() * valid)
        np.testing.assert_array_equal(everything["valid"], valid)


@PARTY_COUNTS
def test_sum_and_count_honor_valid(parties: int) -> None:
    frame = make_frame(100, seed=3)
    valid = (np.random.default_rng(3).random(100) < 0.5).astype(int)

    def program(table: SecretTable) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return table.sum("views").reveal(), table.sum("price").reveal(), table.count().reveal()

    real = frame[valid == 1]
    for views, price, count in run_on_table(parties, frame, program, valid=valid):
        np.testing.assert_array_equal(views, [real.views.sum()])
        np.testing.assert_array_equal(price, [real.price.sum()])
        np.testing.assert_array_equal(count, [len(real)])


def test_from_shares_without_valid_treats_every_row_as_real() -> None:
    shares = share_table(
        {"views": np.array([4, -5, 6])},
        {"views": ColumnSpec("int")},
        2,
        rng=np.random.default_rng(0),
    )

    def program(party: Party) -> Any:
        table = SecretTable.from_shares(
            party, {"views": shares[party.id]["views"]}, {"views": ColumnSpec("int")}
        )
        return len(table), table.reveal(drop_invalid=False)

    for rows, revealed in run_parties(2, program, seed=1, timeout=TIMEOUT):
        assert rows == 3
        np.testing.assert_array_equal(revealed["views"], [4, -5, 6])
        np.testing.assert_array_equal(revealed["valid"], [1, 1, 1])


def test_misuse_of_a_table_fails_loudly() -> None:
    frame = make_frame(6, seed=4)

    def program(table: SecretTable) -> list[str]:
        messages = []
        for action in (
            lambda: table["nope"],
            lambda: table.spec("nope"),
            lambda: table.group_by(["region", "nope"]),
            lambda: table.sum("nope"),
        ):
            with pytest.raises(KeyError) as caught:
                action()
            messages.append(str(caught.value))
        with pytest.raises(TypeError, match="no truth value"):
            bool(table)
        with pytest.raises(TypeError, match="no truth value"):
            if table:
                pass
        assert "rows=6" in repr(table) and "region:key" in repr(table)
        return messages

    for messages in run_on_table(2, frame, program):
        assert all("unknown column 'nope'" in m and "region" in m for m in messages)


def test_constructor_checks_lengths_and_specs() -> None:
    def program(party: Party) -> None:
        column = SecretColumn(party, np.zeros(3, np.uint64))
        short = SecretColumn(party, np.zeros(2, np.uint64))
        with pytest.raises(ValueError, match="differ in length"):
            SecretTable(party, {"a": column}, {"a": ColumnSpec()}, short)
        with pytest.raises(ValueError, match="without a spec"):
            SecretTable(party, {"a": column}, {}, column)

    run_parties(2, program, seed=0, timeout=TIMEOUT)


def test_with_columns_replaces_columns_and_drops_derived_outputs() -> None:
    frame = make_frame(5, seed=5)

    def program(table: SecretTable) -> dict[str, np.ndarray]:
        table.derived = {"avg": ("mean", "views", "region")}
        narrow = table.with_columns({"views": table["views"]}, {"views": SPECS["views"]})
        assert narrow.derived == {} and table.derived != {}
        assert narrow.valid is table.valid
        return narrow.reveal()

    for revealed in run_on_table(2, frame, program):
        assert list(revealed) == ["views"]
        np.testing.assert_array_equal(revealed["views"], frame.views.to_numpy())


# -- finish_derived (plain) --------------------------------------------------------------------


def test_finish_derived_divides_means_and_blanks_empty_groups() -> None:
    plain: dict[str, np.ndarray] = {
        "region": np.array([1, 2, 3]),
        "__sum_views": np.array([10, 0, -9]),
        "__count": np.array([4, 0, 3]),
        "lo": np.array([-2, 0, -7]),
    }
    derived: Mapping[str, tuple[str, ...]] = {
        "avg": ("mean", "__sum_views", "__count"),
        "lo": ("extreme", "__count"),
    }

    out = finish_derived(dict(plain), derived, ["region", "avg", "lo"])

    assert list(out) == ["region", "avg", "lo"]
    np.testing.assert_array_equal(out["avg"], [2.5, np.nan, -3.0])
    np.testing.assert_array_equal(out["lo"], [-2.0, np.nan, -7.0])


def test_finish_derived_drops_helpers_but_keeps_valid() -> None:
    plain = {"__count": np.array([1]), "n": np.array([1]), "valid": np.array([1])}

    assert list(finish_derived(dict(plain), {})) == ["n", "valid"]
    assert list(finish_derived(dict(plain), {}, ["n"])) == ["n", "valid"]


def test_fixed_point_reveal_decodes_reals() -> None:
    frame = pd.DataFrame({"region": [0, 1], "views": [0, 0], "price": [-0.25, 1e6 + 0.5]})

    for revealed in run_on_table(3, frame, lambda t: t.reveal()):
        assert revealed["price"].dtype == np.float64
        np.testing.assert_array_equal(
            revealed["price"], decode_fixed(SPECS["price"].encode(frame.price.to_numpy()))
        )
