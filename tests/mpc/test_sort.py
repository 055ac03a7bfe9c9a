"""Tests for tally.mpc.sort and SecretTable.sort_by: oblivious stable radix sort vs pandas."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd
import pytest
from numpy.typing import ArrayLike
from tests.mpc.tables import run_frame_at_every_party

from tally.mpc.arithmetic import open_values
from tally.mpc.party import Party
from tally.mpc.ring import decode_int, encode_int, split
from tally.mpc.simulate import run_parties
from tally.mpc.sort import apply_destinations, bit_destinations, key_from_values, radix_sort
from tally.mpc.table import ColumnSpec, SecretTable, share_table, table_from_share_set

PARTY_COUNTS = pytest.mark.parametrize("parties", [2, 3, 5])
TUPLE_SOURCES = pytest.mark.parametrize("seed", [2024, None], ids=["seeded-dealer", "os-dealer"])
TIMEOUT = 60.0

SPECS = {
    "region": ColumnSpec("key", bits=4),
    "views": ColumnSpec("int"),
    "price": ColumnSpec("fixed"),
    "row": ColumnSpec("int", bits=16),
}


def make_frame(rows: int, regions: int, seed: int) -> pd.DataFrame:
    """Many ties; ``row`` numbers the input so that the order of ties can be checked."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "region": rng.integers(0, regions, rows),
            "views": rng.integers(-20, 20, rows),
            "price": rng.integers(-300, 300, rows) / 16.0,
            "row": np.arange(rows),
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
    replicated: bool = False,
) -> dict[str, np.ndarray]:
    """Share ``frame``, run ``program(table)`` at every party; check they agree, return one."""
    results = run_frame_at_every_party(
        *(parties, frame, specs, program),
        valid=valid,
        seed=seed,
        share_seed=5,
        timeout=TIMEOUT,
        replicated=replicated,
    )
    for other in results[1:]:
        assert list(other) == list(results[0])
        for name in other:
            np.testing.assert_array_equal(other[name], results[0][name])
    first: dict[str, np.ndarray] = results[0]
    return first


def sorted_by(
    keys: Any, descending: bool = False
) -> Callable[[SecretTable], dict[str, np.ndarray]]:
    return lambda table: table.sort_by(keys, descending).reveal()


def expected_sort(
    frame: pd.DataFrame,
    keys: list[str],
    descending: bool = False,
    valid: ArrayLike | None = None,
) -> pd.DataFrame:
    real = frame if valid is None else frame[np.asarray(valid) == 1]
    return real.sort_values(keys, ascending=not descending, kind="stable")


def assert_frame_equal(got: Mapping[str, np.ndarray], expected: pd.DataFrame) -> None:
    """Every column, in order; the test data are exact in the encoding, so equality is exact."""
    assert list(got) == list(expected.columns)
    for name in expected.columns:
        np.testing.assert_array_equal(got[name], expected[name].to_numpy(), err_msg=name)


@PARTY_COUNTS
@TUPLE_SOURCES
def test_single_key_is_stable_like_pandas(parties: int, seed: int | None) -> None:
    frame = make_frame(60 if parties >= 5 else 300, regions=6, seed=parties)

    got = run_on_table(parties, frame, SPECS, sorted_by("region"), seed=seed)

    assert_frame_equal(got, expected_sort(frame, ["region"]))


@PARTY_COUNTS
def test_descending_keeps_ties_in_input_order(parties: int) -> None:
    frame = make_frame(60 if parties >= 5 else 250, regions=5, seed=31)

    got = run_on_table(parties, frame, SPECS, sorted_by("region", descending=True))

    assert_frame_equal(got, expected_sort(frame, ["region"], descending=True))


@pytest.mark.parametrize("descending", [False, True], ids=["ascending", "descending"])
@pytest.mark.parametrize("parties", [2, 3])
def test_multi_column_key_of_key_and_negative_int(parties: int, descending: bool) -> None:
    frame = make_frame(250, regions=4, seed=32)

    got = run_on_table(parties, frame, SPECS, sorted_by(["region", "views"], descending))

    assert_frame_equal(got, expected_sort(frame, ["region", "views"], descending))


def test_several_keys_wider_than_one_word() -> None:
    """A 63-bit int key beside a key column cannot share a 64-bit word; order must still hold."""
    frame = make_frame(200, regions=3, seed=33)
    frame["views"] = np.random.default_rng(33).integers(-(2**61), 2**61, 200)
    frame.loc[::7, "views"] = 12345  # ties in the second key as well

    got = run_on_table(3, frame, SPECS, sorted_by(["views", "region"]))

    assert_frame_equal(got, expected_sort(frame, ["views", "region"]))


@pytest.mark.parametrize("int_bits", [0, 6], ids=["int-63-bits", "int-6-bits"])
def test_negative_int_key(int_bits: int) -> None:
    frame = make_frame(200, regions=3, seed=34)
    frame["views"] = np.random.default_rng(34).integers(-32, 32, 200)
    specs = {**SPECS, "views": ColumnSpec("int", bits=int_bits)}

    got = run_on_table(2, frame, specs, sorted_by("views"))

    assert_frame_equal(got, expected_sort(frame, ["views"]))


@pytest.mark.parametrize("descending", [False, True], ids=["ascending", "descending"])
def test_fixed_point_key(descending: bool) -> None:
    frame = make_frame(200, regions=3, seed=35)

    got = run_on_table(3, frame, SPECS, sorted_by("price", descending))

    assert_frame_equal(got, expected_sort(frame, ["price"], descending))


@PARTY_COUNTS
def test_dummy_rows_are_dropped_by_reveal(parties: int) -> None:
    rows = 60 if parties >= 5 else 200
    frame = make_frame(rows, regions=5, seed=36)
    valid = (np.random.default_rng(36).random(rows) < 0.7).astype(int)

    def program(table: SecretTable) -> Any:
        ordered = table.sort_by(["region", "views"])
        return ordered.reveal(), ordered.reveal(drop_invalid=False)

    shares = share_table(
        {c: frame[c].to_numpy() for c in SPECS},
        SPECS,
        parties,
        valid=valid,
        rng=np.random.default_rng(0),
    )
    got, everything = run_parties(
        parties,
        lambda p: program(table_from_share_set(p, shares[p.id], SPECS)),
        seed=1,
        timeout=TIMEOUT,
    )[0]

    assert_frame_equal(got, expected_sort(frame, ["region", "views"], valid=valid))
    # unfiltered, the dummies are still there in their sorted places, but what they held
    # is never opened: they come out as zeros
    expected_all = frame.assign(valid=valid).sort_values(["region", "views"], kind="stable")
    for name in SPECS:
        expected_all[name] = expected_all[name].where(expected_all["valid"] == 1, 0)
    assert_frame_equal(everything, expected_all)


@pytest.mark.parametrize(
    "frame",
    [
        pd.DataFrame({"region": [3], "views": [-4], "price": [0.5], "row": [0]}),
        pd.DataFrame({"region": [3, 1], "views": [-4, 9], "price": [0.5, -1.25], "row": [0, 1]}),
        pd.DataFrame({"region": [2, 2], "views": [1, 1], "price": [0.5, -1.25], "row": [0, 1]}),
        pd.DataFrame({"region": [1, 3], "views": [9, -4], "price": [0.5, -1.25], "row": [0, 1]}),
    ],
    ids=["one-row", "two-rows-swapped", "two-rows-tied", "two-rows-in-order"],
)
@pytest.mark.parametrize("descending", [False, True], ids=["ascending", "descending"])
def test_tiny_tables(frame: pd.DataFrame, descending: bool) -> None:
    got = run_on_table(2, frame, SPECS, sorted_by("region", descending))

    assert_frame_equal(got, expected_sort(frame, ["region"], descending))


def test_sort_needs_a_key_and_known_columns() -> None:
    frame = make_frame(5, regions=2, seed=37)

    with pytest.raises(ValueError, match="at least one key"):
        run_on_table(2, frame, SPECS, sorted_by([]))
    with pytest.raises(KeyError, match="unknown column 'nope'"):
        run_on_table(2, frame, SPECS, sorted_by("nope"))


# -- the protocol pieces ----------------------------------------------------------------------


def shared_ints(values: Any, parties: int, seed: int = 0) -> list[np.ndarray]:
    return split(encode_int(values), parties, np.random.default_rng(seed))


@pytest.mark.parametrize("parties", [2, 3])
def test_bit_destinations_are_a_stable_partition(parties: int) -> None:
    bit = np.random.default_rng(38).integers(0, 2, 150)
    shared = shared_ints(bit, parties)

    def program(party: Party) -> np.ndarray:
        (opened,) = open_values(party, [bit_destinations(party, shared[party.id])])
        return decode_int(opened)

    destinations = run_parties(parties, program, seed=3, timeout=TIMEOUT)[0]

    order = np.argsort(bit, kind="stable")  # numpy's stable partition, zeros first
    expected = np.empty(150, np.int64)
    expected[order] = np.arange(150)
    np.testing.assert_array_equal(destinations, expected)


@pytest.mark.parametrize("parties", [2, 3])
def test_apply_destinations_moves_rows(parties: int) -> None:
    rng = np.random.default_rng(39)
    destinations = rng.permutation(80)
    columns = rng.integers(-1000, 1000, (80, 3))
    shared_dest = shared_ints(destinations, parties, 1)
    shared_cols = shared_ints(columns, parties, 2)

    def program(party: Party) -> np.ndarray:
        moved = apply_destinations(party, shared_dest[party.id], shared_cols[party.id], "aaa")
        (opened,) = open_values(party, [moved])
        return decode_int(opened)

    moved = run_parties(parties, program, seed=4, timeout=TIMEOUT)[0]

    expected = np.empty_like(columns)
    expected[destinations] = columns
    np.testing.assert_array_equal(moved, expected)


@pytest.mark.parametrize("parties", [2, 3])
def test_radix_sort_with_mixed_directions(parties: int) -> None:
    """Keys of their own direction: first ascending, second descending (pandas does the same)."""
    rng = np.random.default_rng(40)
    first, second = rng.integers(0, 4, 120), rng.integers(0, 8, 120)
    payload = np.arange(120)
    shared = [shared_ints(v, parties, i) for i, v in enumerate((first, second, payload))]

    def program(party: Party) -> np.ndarray:
        keys = [
            key_from_values(party, shared[0][party.id], 2),
            key_from_values(party, shared[1][party.id], 3, descending=True),
        ]
        moved = radix_sort(party, keys, shared[2][party.id][:, None])
        (opened,) = open_values(party, [moved[:, 0].copy()])
        return decode_int(opened)

    order = run_parties(parties, program, seed=5, timeout=TIMEOUT)[0]

    frame = pd.DataFrame({"first": first, "second": second, "row": payload})
    expected = frame.sort_values(["first", "second"], ascending=[True, False], kind="stable")
    np.testing.assert_array_equal(order, expected.row.to_numpy())
