"""Sort-based oblivious PK-FK equi-join (DESIGN §6.7), and a join followed by a group-by.

:func:`pk_fk_join` ``(unique, many, on)``; ``unique``'s key is unique among its valid rows:

1. Concatenate: ``unique``'s rows (side 0) then ``many``'s rows (side 1); each side's own
   columns, zeros in the other side's rows (local).  ``__pk`` = ``valid`` on side-0 rows.
2. Sort by (key, side) with the engine's sort (:func:`tally.mpc.sorting.sort_rows`
   through :meth:`SecretTable.sort_by`): each key's run starts with its unique row.
3. ``same_i`` = [key_i = key_{i-1}]: one equality per row (key width + 1 bits).
4. Propagation: v_i = a_i · v_{i-1} + b_i with a_i = (1 - pk_i) · same_i and
   b_i = pk_i · (1, unique side's columns on row i): a valid unique row starts its key's
   run, invalid unique rows and many rows pass the carried values on; a log-depth scan of
   affine maps (Hillis-Steele): 1 + ⌈log2 rows⌉ rounds, 1 + carried columns products per
   row per level.
5. Duplicates: ``dup = Σ pk_i · same_i · carried pk_{i-1}`` (2 products per row), then one
   comparison ``dup > 0`` whose single bit is opened: a job whose unique side holds
   a key twice (among valid rows) is refused with :class:`DuplicateKeys`.  That bit is
   all it reveals (not how many or which keys).
6. Match: valid_i = side_i · valid_i · pk carried (one round); unique rows get valid 0.
7. Drop the unique rows without revealing which: shuffle all rows with a fresh secret
   permutation, open ``side`` (after the shuffle it is a public count of side-0 rows
   placed uniformly at random: nothing), keep side-1 rows.

The output has ``many``'s row count and the columns of both sides (``unique``'s key once).
What it reveals: the two input sizes (public anyway) and the one duplicate bit.  The
output rows are in an order fixed by the secret shuffle, independent of the data;
opening them tells the recipient only the joined rows themselves.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tally.mpc.arithmetic import add_public, multiply, open_values
from tally.mpc.columns import SecretColumn
from tally.mpc.compare import equal, less_than_zero
from tally.mpc.ring import Shares
from tally.mpc.shuffle import shuffle_columns
from tally.mpc.table import ColumnSpec, SecretTable

SIDE = "__side"
PK = "__pk"


class DuplicateKeys(ValueError):
    """The unique side of a PK-FK join holds a key more than once (the job is refused)."""


def _check(unique: SecretTable, many: SecretTable, on: str) -> None:
    left, right = unique.spec(on), many.spec(on)
    if (left.kind, left.bits, left.frac_bits) != (right.kind, right.bits, right.frac_bits):
        raise ValueError(
            f"join key {on!r} differs between the sides: {left} vs {right} (same kind and width)"
        )
    clash = (set(unique.columns) & set(many.columns)) - {on}
    if clash:
        raise ValueError(f"both sides have columns {sorted(clash)}: rename one side's")
    if unique.party is not many.party:
        raise ValueError("both tables must belong to the same party")


def carry_down(party: Any, same: Shares, start: Shares, values: Shares) -> Shares:
    """Segmented scan of [start, start · values]: each row gets its run's last start row's.

    v_i = (1 - start_i) · same_i · v_{i-1} + start_i · (1, values_i): a row that starts a
    run (``start`` = 1: a valid unique-side row) sets the carried values, any other row of
    the same key (``same`` = 1) passes the previous row's on, a new key clears them.
    ``same``, ``start`` 0/1 shares (rows,), ``values`` (rows, width); the result is
    (rows, 1 + width), column 0 the carried ``start``.  1 round for the first products,
    then ⌈log2 rows⌉ rounds of 1 + width products per row.
    """
    rows, width = values.shape
    if not rows:
        return np.zeros((0, 1 + width), np.uint64)
    not_start = add_public(party, np.uint64(0) - start, 1)
    products = multiply(party, [(not_start, same)] + [(start, values[:, c]) for c in range(width)])
    factor = products[0].copy()
    carried = np.stack([start, *products[1:]], axis=1)
    width += 1
    step = 1
    while step < rows:
        a_now, a_prev = factor[step:], factor[:-step]
        pairs = [(a_now, a_prev)] + [(a_now, carried[:-step, c]) for c in range(width)]
        products = multiply(party, pairs)
        new_factor = factor.copy()
        new_factor[step:] = products[0]
        new_carried = carried.copy()
        for c in range(width):
            new_carried[step:, c] = carried[step:, c] + products[1 + c]
        factor, carried = new_factor, new_carried
        step *= 2
    return carried


def pk_fk_join(unique: SecretTable, many: SecretTable, on: str, how: str = "inner") -> SecretTable:
    """PK-FK join of ``many`` with ``unique`` on ``on``: ``many``'s rows.

    ``how="inner"``: a row is valid when it is valid and matches a valid unique row.
    ``how="left"``: a row is valid when it is valid; the unique side's columns are 0 where
    nothing matched (no NULLs: the engine has none), and the extra 0/1 column ``matched``
    says which rows matched (secret, like every column).

    Raises :class:`DuplicateKeys` (after opening one bit) when ``unique`` holds a valid key
    twice.  See the module docstring for the steps and what they reveal.
    """
    if how not in ("inner", "left"):
        raise ValueError(f"join how={how!r} is not supported: use 'inner' or 'left'")
    _check(unique, many, on)
    if how == "left" and "matched" in set(unique.columns) | set(many.columns):
        raise ValueError("a left join adds the column 'matched': rename the input's")
    party = unique.party
    spec = unique.spec(on)
    n_u, n_m = len(unique), len(many)
    rows = n_u + n_m
    zeros_u, zeros_m = np.zeros(n_u, np.uint64), np.zeros(n_m, np.uint64)
    carried_names = [n for n in unique.columns if n != on]
    many_names = [n for n in many.columns if n != on]
    one = add_public(party, np.zeros(n_m, np.uint64), 1)
    columns: dict[str, SecretColumn] = {
        on: SecretColumn(party, np.concatenate([unique[on].shares, many[on].shares])),
        SIDE: SecretColumn(party, np.concatenate([zeros_u, one])),
        PK: SecretColumn(party, np.concatenate([unique.valid.shares, zeros_m])),
    }
    specs: dict[str, ColumnSpec] = {on: spec, SIDE: ColumnSpec("key", bits=1), PK: ColumnSpec()}
    for name in carried_names:
        columns[name] = SecretColumn(
            party, np.concatenate([unique[name].shares, zeros_m]), unique[name].frac_bits
        )
        specs[name] = unique.specs[name]
    for name in many_names:
        columns[name] = SecretColumn(
            party, np.concatenate([zeros_u, many[name].shares]), many[name].frac_bits
        )
        specs[name] = many.specs[name]
    valid = SecretColumn(party, np.concatenate([unique.valid.shares, many.valid.shares]))
    table = SecretTable(party, columns, specs, valid).sort_by([on, SIDE])

    key = table[on].shares
    if spec.sort_offset:
        key = add_public(party, key, np.uint64(spec.sort_offset))
    same = np.zeros(rows, np.uint64)
    if rows > 1:
        same[1:] = equal(party, key[:-1], key[1:], spec.sort_width + 1)
    side, pk = table[SIDE].shares, table[PK].shares

    own = np.zeros((rows, len(carried_names)), np.uint64)
    for i, name in enumerate(carried_names):
        own[:, i] = table[name].shares
    carried = carry_down(party, same, pk, own)

    if rows > 1:
        (earlier,) = multiply(party, [(same[1:], carried[:-1, 0])])
        (dup,) = multiply(party, [(earlier, pk[1:])])
        total = np.array([dup.sum()], np.uint64)
        (flag,) = open_values(party, [less_than_zero(party, np.uint64(0) - total)])
        if int(flag[0]) != 0:
            raise DuplicateKeys(
                f"the unique side of the join holds a value of {on!r} more than once: "
                "a PK-FK join needs unique keys there (refused; only this fact was opened)"
            )

    (match_valid,) = multiply(party, [(side, table.valid.shares)])
    extra: list[Shares] = []
    if how == "inner":
        (match_valid,) = multiply(party, [(match_valid, carried[:, 0])])
    else:
        extra = [carried[:, 0]]
        table.specs["matched"] = ColumnSpec("int")
        table.columns["matched"] = SecretColumn(party, carried[:, 0])

    names = [on, *carried_names, *many_names] + (["matched"] if how == "left" else [])
    payload = np.stack(
        [table[on].shares]
        + [carried[:, 1 + i] for i in range(len(carried_names))]
        + [table[n].shares for n in many_names]
        + extra
        + [side, match_valid],
        axis=1,
    )
    if rows:
        payload = shuffle_columns(party, payload)
        (opened_side,) = open_values(party, [payload[:, -2].copy()])
        keep = opened_side == 1
    else:
        keep = np.zeros(0, bool)
    out_columns = {
        n: SecretColumn(party, payload[keep, i].copy(), table[n].frac_bits)
        for i, n in enumerate(names)
    }
    out_specs = {n: table.specs[n] for n in names}
    return SecretTable(party, out_columns, out_specs, SecretColumn(party, payload[keep, -1].copy()))


def join_group_by(
    unique: SecretTable,
    many: SecretTable,
    on: str,
    keys: str | Sequence[str],
    aggregations: Mapping[str, tuple[str, str]],
    **group_options: Any,
) -> SecretTable:
    """``pk_fk_join`` then ``group_by(keys).agg(**aggregations)`` over the matches.

    No intermediate is larger than the inputs (the joined table has ``many``'s rows);
    reveals what the join and the group-by reveal (see both).
    """
    joined = pk_fk_join(unique, many, on)
    return joined.group_by(keys, **group_options).agg(**aggregations)
