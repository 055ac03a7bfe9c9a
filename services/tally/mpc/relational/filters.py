"""Filters and derived columns: secret predicates that only touch ``valid``.

A predicate is a 0/1 :class:`~tally.mpc.columns.SecretColumn` built with the column
operators (``<  <=  >  >=  ==  !=`` against a public constant or another column), with
:func:`between` and :func:`isin`, and combined with :func:`both` (``&``), :func:`either`
(``|``) and :func:`negate` (``~``).  :func:`filter_rows` multiplies ``valid`` by it (one
Beaver product per row): the row count stays public and the same, nothing is opened, so a
filter reveals nothing to anyone; only the recipient of a later output learns what that
output says.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from tally.mpc.arithmetic import add_public, multiply
from tally.mpc.columns import SecretColumn
from tally.mpc.compare import equal
from tally.mpc.ring import Shares
from tally.mpc.table import ColumnSpec, SecretTable


def _bit(like: SecretColumn, shares: Shares) -> SecretColumn:
    return SecretColumn(like.party, shares, 0)


def both(left: SecretColumn, right: SecretColumn) -> SecretColumn:
    """``left & right`` of two 0/1 columns (one product per row, 1 round)."""
    (product,) = multiply(left.party, [(left.shares, right.shares)])
    return _bit(left, product)


def negate(bit: SecretColumn) -> SecretColumn:
    """``~bit`` of a 0/1 column (local)."""
    return _bit(bit, add_public(bit.party, np.uint64(0) - bit.shares, 1))


def either(left: SecretColumn, right: SecretColumn) -> SecretColumn:
    """``left | right`` = a + b - ab of two 0/1 columns (one product per row, 1 round)."""
    (product,) = multiply(left.party, [(left.shares, right.shares)])
    return _bit(left, left.shares + right.shares - product)


def between(column: SecretColumn, low: object, high: object) -> SecretColumn:
    """``low <= column <= high`` (public bounds): two comparisons in one batch, one product."""
    return both(column >= low, column <= high)


def isin(column: SecretColumn, values: Iterable[object]) -> SecretColumn:
    """``column`` in a public set: 1 - prod(column - v) is not usable in Z_2^64, so this is
    the sum of one equality per set member (members are distinct, so at most one is 1)."""
    members = list(dict.fromkeys(values))
    if not members:
        return SecretColumn.public(column.party, np.zeros(len(column), np.int64))
    # every member's equality in one batch: the rounds of one equality, not |S| of them
    differences = np.concatenate([(column - member).shares for member in members])
    bits = equal(column.party, differences, np.zeros_like(differences))
    total = bits.reshape(len(members), len(column)).sum(axis=0, dtype=np.uint64)
    return _bit(column, total)


def filter_rows(table: SecretTable, predicate: SecretColumn) -> SecretTable:
    """The table with ``valid`` multiplied by ``predicate`` (0/1, one round); columns unchanged.

    Reveals nothing: no value is opened and the table keeps its row count.
    """
    if len(predicate) != len(table):
        raise ValueError(f"predicate has {len(predicate)} rows, the table {len(table)}")
    (valid,) = multiply(table.party, [(table.valid.shares, predicate.shares)])
    return table.with_columns(table.columns, table.specs, SecretColumn(table.party, valid))


def derive(
    table: SecretTable, columns: Mapping[str, tuple[SecretColumn, ColumnSpec]]
) -> SecretTable:
    """The table with new columns (``col("a") * col("b")``, ``+ - ×``, × a public constant).

    Each new column comes with its spec; local for + and −, one product per row for ×
    of two columns.  Reveals nothing.
    """
    new = dict(table.columns)
    specs = dict(table.specs)
    for name, (column, spec) in columns.items():
        if len(column) != len(table):
            raise ValueError(f"derived column {name!r} has {len(column)} rows, not {len(table)}")
        if column.frac_bits != spec.frac_bits:
            raise ValueError(
                f"derived column {name!r} has {column.frac_bits} fractional bits, "
                f"its spec {spec.frac_bits}"
            )
        new[name] = column
        specs[name] = spec
    return table.with_columns(new, specs)
