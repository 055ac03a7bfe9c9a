"""Built-in programs, written exactly like user programs (see :mod:`tally.mpc.program`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tally.mpc.columns import SecretColumn
from tally.mpc.dp import DP
from tally.mpc.program import program
from tally.mpc.table import ColumnSpec, SecretTable


def _only_input(tables: Mapping[str, SecretTable]) -> SecretTable:
    if len(tables) != 1:
        raise ValueError(f"this program takes one input table, got {len(tables)}")
    return next(iter(tables.values()))


def _scalar_table(
    table: SecretTable, name: str, value: SecretColumn, spec: ColumnSpec
) -> SecretTable:
    from tally.mpc.arithmetic import public_to_shares

    valid = SecretColumn(table.party, public_to_shares(table.party, np.ones(1, np.uint64)))
    return SecretTable(table.party, {name: value}, {name: spec}, valid)


@program("groupby")
def groupby(
    tables: Mapping[str, SecretTable],
    *,
    keys: Sequence[str],
    aggregations: Mapping[str, Sequence[str]],
    domain: Sequence[Any] | None = None,
    max_groups: int | None = None,
    min_group_size: int | None = None,
    dp: Mapping[str, Any] | None = None,
) -> dict[str, SecretTable]:
    """group_by(keys).agg(**aggregations) over the single input table."""
    table = _only_input(tables)
    noise = DP.from_params(dp) if dp else None
    named = {name: (spec[0], spec[1]) for name, spec in aggregations.items()}
    grouped = table.group_by(
        list(keys), domain=domain, max_groups=max_groups, min_group_size=min_group_size
    )
    return {"result": grouped.agg(dp=noise, **named)}


@program("sort")
def sort(
    tables: Mapping[str, SecretTable], *, keys: Sequence[str], descending: bool = False
) -> dict[str, SecretTable]:
    """The input table sorted by keys."""
    return {"result": _only_input(tables).sort_by(list(keys), descending)}


@program("sum")
def total(tables: Mapping[str, SecretTable], *, column: str) -> dict[str, SecretTable]:
    """Sum of one column over valid rows."""
    table = _only_input(tables)
    spec = table.spec(column)
    out_spec = (
        ColumnSpec("fixed", frac_bits=spec.frac_bits) if spec.kind == "fixed" else ColumnSpec("int")
    )
    return {"result": _scalar_table(table, column, table.sum(column), out_spec)}


@program("count")
def count(tables: Mapping[str, SecretTable]) -> dict[str, SecretTable]:
    """Number of valid rows."""
    table = _only_input(tables)
    return {"result": _scalar_table(table, "count", table.count(), ColumnSpec("int"))}
