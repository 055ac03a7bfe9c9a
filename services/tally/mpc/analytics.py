"""Table-level building blocks shared by sort and group-by: keys, weights, equality of keys."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tally.mpc import bits
from tally.mpc.arithmetic import add_public, multiply
from tally.mpc.columns import SecretColumn
from tally.mpc.compare import bit_decompose, equal
from tally.mpc.party import Party
from tally.mpc.quicksort import AnyKey, ValueKey
from tally.mpc.ring import Shares
from tally.mpc.sort import SortKey, key_from_values, radix_sort
from tally.mpc.sort import merge_keys as merge_keys
from tally.mpc.sorting import sort_rows
from tally.mpc.table import SecretTable


def sort_keys(table: SecretTable, names: Sequence[str], descending: bool = False) -> list[SortKey]:
    """Bit-decompose the key columns (most significant first), merging narrow keys into one word.

    All key columns are decomposed in one batch of rounds; adjacent keys whose
    widths add up to at most 64 bits share one packed word, so they ride in one
    shuffled column.
    """
    party = table.party
    specs = [table.spec(n) for n in names]
    keys = [
        key_from_values(party, table[n].shares, s.sort_width, s.sort_offset, descending)
        for n, s in zip(names, specs, strict=True)
    ]
    return merge_keys(keys)


def value_keys(
    table: SecretTable, names: Sequence[str], descending: bool = False
) -> list[ValueKey]:
    """The key columns as :class:`ValueKey` (value + the spec's offset; local, no protocol).

    A sort decomposes them into bits only if it needs to (a radix sort does, once per key).
    """
    party = table.party
    keys = []
    for name in names:
        spec = table.spec(name)
        values = table[name].shares
        if spec.sort_offset:
            values = add_public(party, values, np.uint64(spec.sort_offset))
        keys.append(ValueKey(values, spec.sort_width, descending))
    return keys


def flag_key(bit_values: Shares, descending: bool = False) -> ValueKey:
    """A one-bit sort key from arithmetic 0/1 shares (e.g. ``valid``); local."""
    return ValueKey(bit_values, 1, descending)


def bit_key(party: Party, bit_values: Shares, descending: bool = False) -> SortKey:
    """A one-bit sort key from arithmetic 0/1 shares (e.g. ``valid``)."""
    planes = bit_decompose(party, bit_values, 1)
    return SortKey(bits.from_planes(planes, bit_values.shape[0]), 1, descending)


def sort_table(
    table: SecretTable, names: Sequence[str], descending: bool = False, method: str | None = None
) -> SecretTable:
    """The whole table, every column and ``valid``, stably sorted by ``names``.

    ``method``: ``radix`` or ``quick``; by default :func:`tally.mpc.sorting.choose_sort`.
    """
    if not names:
        raise ValueError("sort_by needs at least one key column")
    keys = value_keys(table, names, descending)
    column_names = list(table.columns)
    payload = np.stack([table[n].shares for n in column_names] + [table.valid.shares], axis=1)
    moved = sort_rows(table.party, keys, payload, method=method)
    columns = {
        n: SecretColumn(table.party, moved[:, i].copy(), table.columns[n].frac_bits)
        for i, n in enumerate(column_names)
    }
    return table.with_columns(columns, table.specs, SecretColumn(table.party, moved[:, -1].copy()))


def weighted(table: SecretTable, names: Sequence[str]) -> list[SecretColumn]:
    """Each named column multiplied by ``valid`` (one round for all of them)."""
    products = multiply(table.party, [(table[n].shares, table.valid.shares) for n in names])
    return [
        SecretColumn(table.party, p, table[n].frac_bits)
        for n, p in zip(names, products, strict=True)
    ]


def adjacent_equal(table_party: Party, keys: Sequence[tuple[Shares, int, bool]]) -> Shares:
    """[row i has the same key as row i+1] for sorted key columns; shape ``(rows - 1,)``.

    ``keys`` holds (values, width, non_negative) per key column.  Non-negative
    keys whose widths add up to at most 62 bits are packed into one value and
    compared with a single equality of width total + 1; otherwise each key is
    compared on its own and the results multiplied.
    """
    party = table_party
    rows = keys[0][0].shape[0]
    if rows < 2:
        return np.zeros(0, dtype=np.uint64)
    total = sum(width for _, width, _ in keys)
    if all(non_negative for _, _, non_negative in keys) and total <= 62:
        packed = np.zeros(rows, dtype=np.uint64)
        for values, width, _ in keys:
            packed = (packed << np.uint64(width)) + values
        return equal(party, packed[:-1], packed[1:], total + 1)
    result = None
    for values, width, non_negative in keys:
        same = equal(party, values[:-1], values[1:], width + 1 if non_negative else 64)
        result = same if result is None else multiply(party, [(result, same)])[0]
    assert result is not None  # noqa: S101 - keys is non-empty
    return result


def one_minus(party: Party, bit: Shares) -> Shares:
    """Shares of 1 - b."""
    return add_public(party, np.uint64(0) - bit, np.uint64(1))


def prefix_sum(values: Shares) -> Shares:
    """Running totals of shares (local: addition is free)."""
    return np.cumsum(values, dtype=np.uint64)


def radix_sort_columns(
    party: Party, keys: Sequence[SortKey], columns: Sequence[Shares]
) -> list[Shares]:
    """Sort several share columns together by ``keys``; returns them in the new order."""
    moved = radix_sort(party, keys, np.stack(list(columns), axis=1))
    return [moved[:, i].copy() for i in range(moved.shape[1])]


def sort_columns(party: Party, keys: Sequence[AnyKey], columns: Sequence[Shares]) -> list[Shares]:
    """Sort several share columns together by ``keys`` with the planned sort (radix or quick)."""
    moved = sort_rows(party, keys, np.stack(list(columns), axis=1))
    return [moved[:, i].copy() for i in range(moved.shape[1])]
