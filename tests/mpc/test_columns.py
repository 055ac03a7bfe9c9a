"""Tests for tally.mpc.columns: SecretColumn and BitColumn operators, checked against numpy.

Integer references are computed in numpy int64 (which wraps like Z_2^64); fixed-point
references in the encoded domain (round(value * 2^frac_bits) as int64), so that every
comparison is exact.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from tally.mpc.columns import BitColumn, SecretColumn
from tally.mpc.party import Party
from tally.mpc.ring import EncodingError, encode_fixed, encode_int, split
from tally.mpc.simulate import run_parties

LARGEST = 2**62 - 1
EDGE_INTS = [0, 1, -1, LARGEST, -LARGEST]
FRAC = 16
PARTY_COUNTS = pytest.mark.parametrize("parties", [2, 3, 5])
TUPLE_SOURCES = pytest.mark.parametrize("seed", [2024, None], ids=["seeded-dealer", "os-dealer"])
ring_ints = st.integers(-LARGEST, LARGEST)
fixed_reals = st.floats(-(2.0**40), 2.0**40, allow_nan=False, allow_infinity=False)
TIMEOUT = 60.0


def share_ints(values: Any, parties: int, seed: int = 0) -> list[np.ndarray]:
    return split(
        encode_int(np.asarray(values, dtype=np.int64)), parties, np.random.default_rng(seed)
    )


def share_fixed(values: Any, parties: int, seed: int = 0) -> list[np.ndarray]:
    return split(encode_fixed(values, FRAC), parties, np.random.default_rng(seed))


def fixed_ints(values: Any, frac_bits: int = FRAC) -> np.ndarray:
    """The encoded integers round(value * 2^frac_bits), as int64: the exact reference domain."""
    return encode_fixed(values, frac_bits).view(np.int64)


def reveal_all(
    parties: int,
    seed: int | None,
    program: Callable[[Party], dict[str, SecretColumn]],
) -> dict[str, np.ndarray]:
    """Run ``program`` at every party, reveal every column it returns, check all parties agree."""

    def run(party: Party) -> dict[str, tuple[np.ndarray, int]]:
        columns = program(party)
        return {name: (column.reveal(), column.frac_bits) for name, column in columns.items()}

    results = run_parties(parties, run, seed=seed, timeout=TIMEOUT)
    revealed = {}
    for name, (value, frac_bits) in results[0].items():
        for other in results[1:]:
            np.testing.assert_array_equal(other[name][0], value)
            assert other[name][1] == frac_bits
        revealed[name] = value
    return revealed


def mixed_ints(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two signed columns with edge values, equal rows and close rows."""
    rng = np.random.default_rng(seed)
    left = np.concatenate([EDGE_INTS, rng.integers(-LARGEST, LARGEST, size=rows, endpoint=True)])
    right = np.concatenate(
        [EDGE_INTS[::-1], rng.integers(-LARGEST, LARGEST, size=rows, endpoint=True)]
    )
    right[5::3] = left[5::3]
    right[6::5] = np.clip(left[6::5] + 1, -LARGEST, LARGEST)
    return left.astype(np.int64), right.astype(np.int64)


def integer_expectations(left: np.ndarray, right: np.ndarray) -> dict[str, np.ndarray]:
    return {
        "add": left + right,
        "sub": left - right,
        "mul": left * right,
        "neg": -left,
        "lt": (left < right).astype(np.int64),
        "le": (left <= right).astype(np.int64),
        "gt": (left > right).astype(np.int64),
        "ge": (left >= right).astype(np.int64),
        "eq": (left == right).astype(np.int64),
        "ne": (left != right).astype(np.int64),
    }


def integer_program(
    shared_left: list[np.ndarray], shared_right: list[np.ndarray]
) -> Callable[[Party], dict[str, SecretColumn]]:
    def program(party: Party) -> dict[str, SecretColumn]:
        x = SecretColumn(party, shared_left[party.id])
        y = SecretColumn(party, shared_right[party.id])
        return {
            "add": x + y,
            "sub": x - y,
            "mul": x * y,
            "neg": -x,
            "lt": x < y,
            "le": x <= y,
            "gt": x > y,
            "ge": x >= y,
            "eq": x == y,
            "ne": x != y,
        }

    return program


def assert_revealed(revealed: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert revealed.keys() == expected.keys()
    for name, value in expected.items():
        np.testing.assert_array_equal(revealed[name], value, err_msg=name)


# -- integer columns --------------------------------------------------------------------


@PARTY_COUNTS
@TUPLE_SOURCES
def test_integer_operators_with_secret_operands(parties: int, seed: int | None) -> None:
    left, right = mixed_ints(300, seed=parties)
    program = integer_program(share_ints(left, parties, 1), share_ints(right, parties, 2))
    assert_revealed(reveal_all(parties, seed, program), integer_expectations(left, right))


@PARTY_COUNTS
@TUPLE_SOURCES
def test_integer_operators_with_public_operands(parties: int, seed: int | None) -> None:
    values, public_row = mixed_ints(100, seed=7)
    shared = share_ints(values, parties)

    def program(party: Party) -> dict[str, SecretColumn]:
        x = SecretColumn(party, shared[party.id])
        return {
            "add": x + 5,
            "radd": 5 + x,
            "sub": x - 7,
            "rsub": 7 - x,
            "mul": x * 3,
            "rmul": -3 * x,
            "mul_row": x * (public_row % 1000),
            "add_row": x + public_row,
            "numpy_left": public_row + x,
            "lt": x < 4,
            "le": x <= public_row,
            "gt": x > -1,
            "ge": x >= 0,
            "eq": x == 1,
            "ne": x != public_row,
            "reflected_lt": x > 0,
            "float_int": x + 2.0,
        }

    expected = {
        "add": values + 5,
        "radd": 5 + values,
        "sub": values - 7,
        "rsub": 7 - values,
        "mul": values * 3,
        "rmul": -3 * values,
        "mul_row": values * (public_row % 1000),
        "add_row": values + public_row,
        "numpy_left": public_row + values,
        "lt": values < 4,
        "le": values <= public_row,
        "gt": values > -1,
        "ge": values >= 0,
        "eq": values == 1,
        "ne": values != public_row,
        "reflected_lt": values > 0,
        "float_int": values + 2,
    }
    revealed = reveal_all(parties, seed, program)
    assert_revealed(revealed, {k: np.asarray(v, dtype=np.int64) for k, v in expected.items()})


@PARTY_COUNTS
@TUPLE_SOURCES
@given(
    rows=st.lists(st.tuples(ring_ints, ring_ints, st.booleans()), max_size=40),
)
@example(rows=[(a, b, False) for a in EDGE_INTS for b in EDGE_INTS])
@example(rows=[])
@example(rows=[(LARGEST, LARGEST, True)])
@example(rows=[(-LARGEST, LARGEST, False)])
def test_integer_operators_property(
    parties: int, seed: int | None, rows: list[tuple[int, int, bool]]
) -> None:
    left = np.array([a for a, _, _ in rows], dtype=np.int64)
    right = np.array([a if same else b for a, b, same in rows], dtype=np.int64)
    program = integer_program(share_ints(left, parties, 1), share_ints(right, parties, 2))
    assert_revealed(reveal_all(parties, seed, program), integer_expectations(left, right))


@PARTY_COUNTS
@given(values=st.lists(ring_ints, max_size=30), public=ring_ints)
@example(values=EDGE_INTS, public=0)
@example(values=EDGE_INTS, public=LARGEST)
@example(values=EDGE_INTS, public=-LARGEST)
@example(values=[], public=1)
@example(values=[-1], public=-1)
def test_public_scalar_operators_property(parties: int, values: list[int], public: int) -> None:
    column = np.array(values, dtype=np.int64)
    shared = share_ints(column, parties)

    def program(party: Party) -> dict[str, SecretColumn]:
        x = SecretColumn(party, shared[party.id])
        return {
            "add": x + public,
            "rsub": public - x,
            "mul": x * public,
            "lt": x < public,
            "ge": x >= public,
            "eq": x == public,
            "gt": public > x,
        }

    expected = {
        "add": column + public,
        "rsub": public - column,
        "mul": column * np.int64(public),
        "lt": column < public,
        "ge": column >= public,
        "eq": column == public,
        "gt": public > column,
    }
    revealed = reveal_all(parties, 77, program)
    assert_revealed(revealed, {k: np.asarray(v, dtype=np.int64) for k, v in expected.items()})


# -- fixed-point columns ----------------------------------------------------------------


@PARTY_COUNTS
@TUPLE_SOURCES
def test_fixed_point_add_and_compare(parties: int, seed: int | None) -> None:
    rng = np.random.default_rng(parties)
    reals = np.concatenate([[0.0, 0.5, -0.5, 1.0 / 3.0, -2.25, 0.3], rng.normal(0, 1e4, 200)])
    others = np.concatenate([[0.0, -0.5, -0.5, 0.3333, 2.25, 0.3], rng.normal(0, 1e4, 200)])
    others[10::4] = reals[10::4]
    integers = np.round(rng.normal(0, 1e4, reals.size)).astype(np.int64)
    integers[:4] = [0, 1, -1, 0]
    shared_x, shared_y = share_fixed(reals, parties, 1), share_fixed(others, parties, 2)
    shared_n = share_ints(integers, parties, 3)

    def program(party: Party) -> dict[str, SecretColumn]:
        x = SecretColumn(party, shared_x[party.id], FRAC)
        y = SecretColumn(party, shared_y[party.id], FRAC)
        n = SecretColumn(party, shared_n[party.id])
        return {
            "add": x + y,
            "sub": x - y,
            "add_int_column": x + n,
            "int_plus_fixed": n + x,
            "add_public": x + 0.25,
            "rsub_public": 1.5 - x,
            "add_int_public": x + 3,
            "int_column_plus_real": n + 0.75,
            "scale": x * 3,
            "lt": x < y,
            "le": x <= y,
            "gt": x > y,
            "ge": x >= n,
            "eq": x == y,
            "ne": x != y,
            "lt_public": x < 0.3,
            "ge_public": x >= -0.5,
            "eq_public": x == 0.5,
            "int_lt_real": n < 0.5,
        }

    ex, ey, en = fixed_ints(reals), fixed_ints(others), integers << FRAC
    scale = 2.0**FRAC
    expected = {
        "add": (ex + ey) / scale,
        "sub": (ex - ey) / scale,
        "add_int_column": (ex + en) / scale,
        "int_plus_fixed": (ex + en) / scale,
        "add_public": (ex + fixed_ints(0.25)) / scale,
        "rsub_public": (fixed_ints(1.5) - ex) / scale,
        "add_int_public": (ex + (3 << FRAC)) / scale,
        "int_column_plus_real": (en + fixed_ints(0.75)) / scale,
        "scale": 3 * ex / scale,
        "lt": ex < ey,
        "le": ex <= ey,
        "gt": ex > ey,
        "ge": ex >= en,
        "eq": ex == ey,
        "ne": ex != ey,
        "lt_public": ex < fixed_ints(0.3),
        "ge_public": ex >= fixed_ints(-0.5),
        "eq_public": ex == fixed_ints(0.5),
        "int_lt_real": en < fixed_ints(0.5),
    }
    revealed = reveal_all(parties, seed, program)
    for name in ("add", "sub", "add_int_column", "add_public", "scale"):
        assert revealed[name].dtype == np.float64
    comparisons = {
        "lt",
        "le",
        "gt",
        "ge",
        "eq",
        "ne",
        "lt_public",
        "ge_public",
        "eq_public",
        "int_lt_real",
    }
    assert_revealed(
        revealed,
        {
            k: (np.asarray(v, dtype=np.int64) if k in comparisons else v)
            for k, v in expected.items()
        },
    )


@PARTY_COUNTS
@TUPLE_SOURCES
@given(st.lists(st.tuples(fixed_reals, fixed_reals, st.booleans()), max_size=30))
@example(
    [
        (0.0, 0.0, True),
        (1.0, -1.0, False),
        (-(2.0**40), 2.0**40, False),
        (2.0**-16, 2.0**-17, False),
    ]
)
@example([])
@example([(0.5, 0.5, False)])
def test_fixed_point_property(
    parties: int, seed: int | None, rows: list[tuple[float, float, bool]]
) -> None:
    reals = np.array([a for a, _, _ in rows], dtype=np.float64)
    others = np.array([a if same else b for a, b, same in rows], dtype=np.float64)
    shared_x, shared_y = share_fixed(reals, parties, 1), share_fixed(others, parties, 2)

    def program(party: Party) -> dict[str, SecretColumn]:
        x = SecretColumn(party, shared_x[party.id], FRAC)
        y = SecretColumn(party, shared_y[party.id], FRAC)
        return {"add": x + y, "lt": x < y, "eq": x == y, "le_public": x <= 0.1}

    ex, ey = fixed_ints(reals), fixed_ints(others)
    expected = {
        "add": (ex + ey) / 2.0**FRAC,
        "lt": (ex < ey).astype(np.int64),
        "eq": (ex == ey).astype(np.int64),
        "le_public": (ex <= fixed_ints(0.1)).astype(np.int64),
    }
    assert_revealed(reveal_all(parties, seed, program), expected)


@PARTY_COUNTS
@TUPLE_SOURCES
def test_integer_times_fixed_point(parties: int, seed: int | None) -> None:
    rng = np.random.default_rng(11)
    counts = np.concatenate([[0, 1, -1, 3], rng.integers(-1000, 1000, size=100)]).astype(np.int64)
    reals = np.concatenate([[2.5, -0.125, 7.0, 1.0 / 3.0], rng.normal(0, 1e5, size=100)])
    shared_n, shared_x = share_ints(counts, parties, 1), share_fixed(reals, parties, 2)

    def program(party: Party) -> dict[str, SecretColumn]:
        n = SecretColumn(party, shared_n[party.id])
        x = SecretColumn(party, shared_x[party.id], FRAC)
        return {"int_times_fixed": n * x, "fixed_times_int": x * n}

    revealed = reveal_all(parties, seed, program)
    expected = counts * fixed_ints(reals) / 2.0**FRAC
    np.testing.assert_array_equal(revealed["int_times_fixed"], expected)
    np.testing.assert_array_equal(revealed["fixed_times_int"], expected)


@PARTY_COUNTS
def test_products_keep_the_fractional_bits(parties: int) -> None:
    shared_n, shared_x = share_ints([2], parties), share_fixed([1.5], parties)

    def program(party: Party) -> list[int]:
        n = SecretColumn(party, shared_n[party.id])
        x = SecretColumn(party, shared_x[party.id], FRAC)
        return [
            (n * x).frac_bits,
            (x * n).frac_bits,
            (n * n).frac_bits,
            (x * 2).frac_bits,
            (n + x).frac_bits,
            (n + 0.5).frac_bits,
            (x < n).frac_bits,
        ]

    assert run_parties(parties, program, seed=1) == [[FRAC, FRAC, 0, FRAC, FRAC, FRAC, 0]] * parties


@PARTY_COUNTS
def test_fixed_times_fixed_raises_type_error(parties: int) -> None:
    shared = share_fixed([1.5, -2.0], parties)

    def program(party: Party) -> SecretColumn:
        x = SecretColumn(party, shared[party.id], FRAC)
        return x * x

    with pytest.raises(TypeError, match="truncation"):
        run_parties(parties, program, seed=1, timeout=TIMEOUT)


@PARTY_COUNTS
def test_multiplying_by_a_fractional_constant_raises_type_error(parties: int) -> None:
    shared = share_ints([1, 2], parties)
    with pytest.raises(TypeError, match="integers only"):
        run_parties(parties, lambda party: SecretColumn(party, shared[party.id]) * 2.5, seed=1)


@PARTY_COUNTS
def test_fixed_point_column_refuses_an_out_of_range_public_integer(parties: int) -> None:
    """2^47 with 16 fractional bits is 2^63: like ``x + (2.0**47 + 0.5)`` it must not encode.

    Today the integer is shifted left without a range check and wraps, so the sum
    reveals as -2^47 instead of failing.
    """
    shared = share_fixed([0.0], parties)

    def program(party: Party) -> np.ndarray:
        x = SecretColumn(party, shared[party.id], FRAC)
        return (x + 2**47).reveal()

    with pytest.raises(EncodingError):
        run_parties(parties, program, seed=1, timeout=TIMEOUT)


@PARTY_COUNTS
@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_comparing_with_a_fractional_constant_emits_no_warning(parties: int) -> None:
    """Ring arithmetic wraps by design; it must not surface as numpy overflow warnings.

    Today ``np.uint64(0) - encoded`` runs on a 0-d scalar for ``x < 0.5`` and numpy
    warns "overflow encountered in scalar subtract" (an error under ``-W error``).
    """
    shared = share_fixed([0.25, 0.75], parties)

    def program(party: Party) -> np.ndarray:
        x = SecretColumn(party, shared[party.id], FRAC)
        return (x < 0.5).reveal()

    for revealed in run_parties(parties, program, seed=1, timeout=TIMEOUT):
        np.testing.assert_array_equal(revealed, [1, 0])


def test_public_column_of_fractions_needs_fractional_bits() -> None:
    def program(party: Party) -> np.ndarray:
        return SecretColumn.public(party, [0.5, 1.25], FRAC).reveal()

    for revealed in run_parties(2, program, seed=1):
        np.testing.assert_array_equal(revealed, [0.5, 1.25])
    with pytest.raises(EncodingError):
        run_parties(2, lambda party: SecretColumn.public(party, [0.5]), seed=1)


# -- truth values -----------------------------------------------------------------------


@PARTY_COUNTS
def test_secret_columns_have_no_truth_value(parties: int) -> None:
    shared = share_ints([1, 0], parties)

    def program(party: Party) -> list[str]:
        x = SecretColumn(party, shared[party.id])
        bit_column = x.to_bits(2)  # communicates identically at every party
        refused = []
        for candidate in (x, x < 1, x == 0, bit_column, SecretColumn.public(party, [1])):
            try:
                bool(candidate)
            except TypeError:
                refused.append(type(candidate).__name__)
        try:
            if x:  # control flow on a secret
                pass
        except TypeError:
            refused.append("if")
        return refused

    expected = ["SecretColumn", "SecretColumn", "SecretColumn", "BitColumn", "SecretColumn", "if"]
    assert run_parties(parties, program, seed=1) == [expected] * parties


@PARTY_COUNTS
def test_bool_raises_type_error(parties: int) -> None:
    shared = share_ints([3], parties)
    with pytest.raises(TypeError, match="no truth value"):
        run_parties(parties, lambda party: bool(SecretColumn(party, shared[party.id])), seed=1)
    with pytest.raises(TypeError, match="no truth value"):
        run_parties(parties, lambda party: bool(SecretColumn(party, shared[party.id]) < 2), seed=1)


def test_secret_columns_are_unhashable() -> None:
    def program(party: Party) -> bool:
        try:
            hash(SecretColumn.public(party, [1]))
        except TypeError:
            return True
        return False

    assert run_parties(2, program, seed=1) == [True, True]


# -- aggregation, bits ------------------------------------------------------------------


@PARTY_COUNTS
@TUPLE_SOURCES
def test_sum_open_and_reveal(parties: int, seed: int | None) -> None:
    values = np.array([*EDGE_INTS, 17, -4], dtype=np.int64)
    reals = np.array([0.5, -1.25, 3.0])
    shared, shared_real = share_ints(values, parties), share_fixed(reals, parties)

    def program(party: Party) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        x = SecretColumn(party, shared[party.id])
        y = SecretColumn(party, shared_real[party.id], FRAC)
        return x.sum().reveal(), x.open(), y.sum().reveal(), len(x)

    for total, opened, real_total, rows in run_parties(parties, program, seed=seed):
        np.testing.assert_array_equal(total, [values.sum()])
        np.testing.assert_array_equal(opened, values.view(np.uint64))
        np.testing.assert_array_equal(real_total, [reals.sum()])
        assert rows == values.size


@PARTY_COUNTS
@TUPLE_SOURCES
@pytest.mark.parametrize("rows", [1, 64, 130])
def test_bit_columns_match_numpy(parties: int, seed: int | None, rows: int) -> None:
    rng = np.random.default_rng(rows)
    left = rng.integers(0, 256, size=rows)
    right = rng.integers(0, 256, size=rows)
    shared_left, shared_right = share_ints(left, parties, 1), share_ints(right, parties, 2)

    def program(party: Party) -> dict[str, Any]:
        x = SecretColumn(party, shared_left[party.id]).to_bits(8)
        y = SecretColumn(party, shared_right[party.id]).to_bits(8)
        assert isinstance(x, BitColumn) and len(x) == rows
        return {
            "bits": x.reveal(),
            "and": (x & y).reveal(),
            "xor": (x ^ y).reveal(),
            "not": (~x).reveal(),
            "planes": [column.reveal() for column in x.to_arithmetic()],
        }

    unsigned_left, unsigned_right = left.astype(np.uint64), right.astype(np.uint64)
    for result in run_parties(parties, program, seed=seed, timeout=TIMEOUT):
        np.testing.assert_array_equal(result["bits"], unsigned_left)
        np.testing.assert_array_equal(result["and"], unsigned_left & unsigned_right)
        np.testing.assert_array_equal(result["xor"], unsigned_left ^ unsigned_right)
        np.testing.assert_array_equal(result["not"], ~unsigned_left & np.uint64(255))
        for position, plane in enumerate(result["planes"]):
            np.testing.assert_array_equal(plane, (left >> position) & 1)


@PARTY_COUNTS
@TUPLE_SOURCES
@given(st.lists(ring_ints, max_size=40), st.integers(1, 64))
@example(EDGE_INTS, 64)
@example([], 3)
@example([-1], 1)
def test_to_bits_property(parties: int, seed: int | None, values: list[int], width: int) -> None:
    column = np.array(values, dtype=np.int64)
    shared = share_ints(column, parties)
    results = run_parties(
        parties,
        lambda party: SecretColumn(party, shared[party.id]).to_bits(width).reveal(),
        seed=seed,
        timeout=TIMEOUT,
    )
    mask = np.uint64(2**width - 1)
    for revealed in results:
        np.testing.assert_array_equal(revealed, column.view(np.uint64) & mask)
