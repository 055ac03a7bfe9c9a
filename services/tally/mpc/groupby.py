"""Secure ``group_by(keys).agg(...)``: the headline primitive (DESIGN §6.4).

Steps, for a table of m rows:

1. Padding: with a public ``domain`` append one dummy row (``valid`` = 0) per
   domain key, so every domain key occurs.
2. Weights: every summed column is multiplied by ``valid`` (1 round).
3. Sort by the keys (:mod:`tally.mpc.sort`), carrying keys, ``valid`` and the
   weighted columns.
   The sort key ends with a ``present`` bit (``valid``, or 1 for a domain row),
   so the last row of a group is present whenever any row of it is.
4. Group ends: last_i = (1 - [key_i == key_{i+1}]) * present_i, last_{m-1} =
   present_{m-1} (one equality of width total-key-bits + 1 when the keys pack
   into 62 bits, one product).  A key held only by dummy rows is no group.
5. Running totals of weighted values and of ``valid``: local prefix sums.
6. min / max: one more radix sort by (keys, valid, value) - value descending for
   min - carrying only the value; groups occupy the same rows as in step 3, so
   the last row of each group holds its extreme valid value.
7. Compaction: a one-bit stable sort on 1 - last moves the group ends, in key
   order, to the front.  Without padding the number of distinct keys
   g = sum(last) is opened (revealed by design; keys held only by a provider's
   dummy rows do not count); with ``domain`` or ``max_groups`` the first G rows are
   kept and multiplied by last, so rows that are not group ends come out as
   padding (valid = 0, zero values): the output shape is fixed and reveals
   neither which keys occur nor how many.  Except with ``domain`` (whose
   absent keys come out with count 0), an output row is valid only if its
   count is positive (one comparison per output row), so keys held only by
   dummy rows are no group, as in pandas.
8. Sums and counts are differences of consecutive running totals (local);
   means are opened as sum and count and divided by the recipient.
9. Optional DP noise (:mod:`tally.mpc.dp`) on sums and counts before any
   opening.

Opened values: only the uniformly random permutations inside the sorts, the
masked values inside comparisons and products, and, without padding, g.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from tally.mpc.analytics import (
    adjacent_equal,
    bit_key,
    merge_keys,
    one_minus,
    prefix_sum,
    radix_sort_columns,
    sort_keys,
    weighted,
)
from tally.mpc.arithmetic import multiply, open_values, public_to_shares
from tally.mpc.columns import SecretColumn
from tally.mpc.dp import DP, add_noise
from tally.mpc.party import Party
from tally.mpc.ring import Shares
from tally.mpc.sort import SortKey, apply_destinations, bit_destinations, key_from_values
from tally.mpc.table import ColumnSpec, SecretTable

if TYPE_CHECKING:
    from tally.mpc.table import GroupBy

FUNCTIONS = ("sum", "count", "mean", "min", "max")


def _check(table: SecretTable, keys: Sequence[str], aggregations: Mapping[str, Any]) -> None:
    if not aggregations:
        raise ValueError('agg needs at least one aggregation, e.g. total=("views", "sum")')
    for name, spec in aggregations.items():
        if not (isinstance(spec, tuple) and len(spec) == 2):
            raise ValueError(f"aggregation {name!r} must be a (column, function) pair")
        column, function = spec
        if function not in FUNCTIONS:
            raise ValueError(
                f"unknown aggregation {function!r} for {name!r}; use one of {FUNCTIONS}"
            )
        table.spec(column)
        if name in keys:
            raise ValueError(f"output name {name!r} collides with a key column")


def check_dp(aggregations: Mapping[str, Sequence[str]], dp: DP | None) -> None:
    """Refuse min and max under ``dp``: only counts and sums get noise, so they would be
    opened exactly."""
    if dp is None:
        return
    extremes = sorted(name for name, spec in aggregations.items() if spec[1] in ("min", "max"))
    if extremes:
        raise ValueError(
            f"with dp, min and max would be opened without noise ({', '.join(extremes)}): "
            "drop them or dp"
        )


def dp_epsilon(aggregations: Mapping[str, Sequence[str]], dp: DP) -> float:
    """The epsilon a group-by with ``dp`` spends on its input.

    The count and every summed column (``sum``, ``mean``) get noise of their own, and
    each is an (epsilon, delta) release; by basic composition the job spends their sum.
    Groups are disjoint, so a row lies in one group of each release (parallel
    composition): the number of groups does not multiply the cost.
    """
    summed = {spec[0] for spec in aggregations.values() if spec[1] in ("sum", "mean")}
    return dp.epsilon * (1 + len(summed))


def _pad_with_domain(
    table: SecretTable, keys: Sequence[str], domain: Sequence[Any]
) -> tuple[SecretTable, Shares]:
    """The table plus one dummy row per domain key, and the ``present`` flags (valid or domain)."""
    party = table.party
    values = [tuple(v) if isinstance(v, (tuple, list)) else (v,) for v in domain]
    if any(len(v) != len(keys) for v in values):
        raise ValueError(f"every domain entry needs {len(keys)} key value(s)")
    extra = len(values)
    columns = {}
    for name, column in table.columns.items():
        if name in keys:
            plain = [v[keys.index(name)] for v in values]
            dummy = public_to_shares(party, table.specs[name].encode(plain))
        else:
            dummy = np.zeros(extra, dtype=np.uint64)
        columns[name] = SecretColumn(
            party, np.concatenate([column.shares, dummy]), column.frac_bits
        )
    valid = np.concatenate([table.valid.shares, np.zeros(extra, dtype=np.uint64)])
    ones = public_to_shares(party, np.ones(extra, np.uint64))
    present = np.concatenate([table.valid.shares, ones])
    return table.with_columns(columns, table.specs, SecretColumn(party, valid)), present


def _extremes(
    table: SecretTable, group_keys: Sequence[SortKey], requests: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], Shares]:
    """For each (column, min|max), the column sorted so that each group's last row is extreme.

    ``group_keys``: the group keys as :func:`sort_keys` decomposed them (once, for this
    sort and the main one).
    """
    party = table.party
    out: dict[tuple[str, str], Shares] = {}
    if not requests:
        return out
    valid_key = bit_key(party, table.valid.shares)
    for column, function in requests:
        spec = table.spec(column)
        value_key = key_from_values(
            party, table[column].shares, spec.sort_width, spec.sort_offset, function == "min"
        )
        (moved,) = radix_sort_columns(
            party, [*group_keys, valid_key, value_key], [table[column].shares]
        )
        out[(column, function)] = moved
    return out


def _differences(running: Shares) -> Shares:
    previous = np.concatenate([np.zeros(1, dtype=np.uint64), running[:-1]])
    differences: Shares = running - previous
    return differences


def aggregate(group: GroupBy, aggregations: Mapping[str, Any], dp: DP | None) -> SecretTable:
    """Run ``group_by(...).agg(...)``; returns the output table (keys first, then aggregates)."""
    table, keys = group.table, group.keys
    _check(table, keys, aggregations)
    check_dp(aggregations, dp)
    if group.domain is not None and group.max_groups is not None:
        raise ValueError("give either domain or max_groups, not both")
    if group.max_groups is not None and group.max_groups < 1:
        raise ValueError("max_groups must be at least 1")
    if group.domain is not None:
        if len(set(map(str, group.domain))) != len(group.domain):
            raise ValueError("domain values must be distinct")
        table, present = _pad_with_domain(table, keys, group.domain)
    else:
        present = table.valid.shares
    out_rows = len(group.domain) if group.domain is not None else group.max_groups
    party = table.party

    summed = sorted({c for c, f in aggregations.values() if f in ("sum", "mean")})
    extreme_requests = sorted({(c, f) for c, f in aggregations.values() if f in ("min", "max")})
    weights = weighted(table, summed) if summed else []

    group_keys = sort_keys(table, keys)
    extremes = _extremes(table, group_keys, extreme_requests)
    # Sort by (keys, present): a group's last row is present whenever any of its rows is.
    key_list = merge_keys([*group_keys, bit_key(party, present)])
    carried = [table[k].shares for k in keys] + [table.valid.shares, present]
    ordered = radix_sort_columns(party, key_list, carried + [w.shares for w in weights])
    width = len(keys)
    key_values, valid, present = ordered[:width], ordered[width], ordered[width + 1]
    sums = ordered[width + 2 :]

    rows = valid.shape[0]
    specs = [table.spec(k) for k in keys]
    same = adjacent_equal(
        party,
        [(v, s.sort_width, s.kind == "key") for v, s in zip(key_values, specs, strict=True)],
    )
    last = np.concatenate(
        [one_minus(party, same), public_to_shares(party, np.ones(min(rows, 1), np.uint64))]
    )
    (last,) = multiply(party, [(last, present)])  # ends of groups with a present row

    running = [prefix_sum(valid)] + [prefix_sum(s) for s in sums]
    payload = (
        np.stack(key_values + running + [extremes[r] for r in extreme_requests] + [last], axis=1)
        if rows
        else np.zeros((0, len(keys) + len(running) + len(extreme_requests) + 1), np.uint64)
    )
    if rows:
        destinations = bit_destinations(party, one_minus(party, last))
        payload = apply_destinations(party, destinations, payload, "a" * payload.shape[1])

    payload, ends, padded = keep_group_ends(party, payload, out_rows)
    return _assemble(table, keys, aggregations, summed, extreme_requests, payload, ends, padded, dp)


def keep_group_ends(
    party: Party, payload: Shares, out_rows: int | None
) -> tuple[Shares, Shares, bool]:
    """The first rows of a compacted payload (its last column: group-end bits), and their validity.

    Without padding (``out_rows`` None) the number of groups is opened and that many rows
    kept, all valid; with padding exactly ``out_rows`` rows are kept (zero rows appended
    if the table is shorter) and their validity is the secret group-end bit.
    Returns (payload, ends, padded).
    """
    if out_rows is None:
        last = payload[:, -1] if payload.shape[0] else np.zeros(0, np.uint64)
        (groups,) = open_values(party, [np.array([last.sum(dtype=np.uint64)])])
        kept = payload[: int(groups[0])]
        return kept, public_to_shares(party, np.ones(kept.shape[0], np.uint64)), False
    kept = payload[:out_rows]
    if kept.shape[0] < out_rows:
        filler = np.zeros((out_rows - kept.shape[0], kept.shape[1]), np.uint64)
        kept = np.vstack([kept, filler])
    return kept, np.ascontiguousarray(kept[:, -1]), True


def _assemble(
    table: SecretTable,
    keys: Sequence[str],
    aggregations: Mapping[str, Any],
    summed: Sequence[str],
    extreme_requests: Sequence[tuple[str, str]],
    payload: Shares,
    ends: Shares,
    padded: bool,
    dp: DP | None,
) -> SecretTable:
    party: Party = table.party
    width = len(keys)
    key_values = [np.ascontiguousarray(payload[:, i]) for i in range(width)]
    count = _differences(payload[:, width])
    totals = {c: _differences(payload[:, width + 1 + i]) for i, c in enumerate(summed)}
    base = width + 1 + len(summed)
    extremes = {
        r: np.ascontiguousarray(payload[:, base + i]) for i, r in enumerate(extreme_requests)
    }
    if padded:
        columns_to_mask = key_values + [count] + list(totals.values()) + list(extremes.values())
        masked = multiply(party, [(c, ends) for c in columns_to_mask])
        key_values = masked[:width]
        count = masked[width]
        totals = dict(zip(totals, masked[width + 1 : width + 1 + len(totals)], strict=True))
        extremes = dict(zip(extremes, masked[width + 1 + len(totals) :], strict=True))
    if dp is not None:
        count = add_noise(party, count, dp)
        totals = {c: add_noise(party, t, dp, table.spec(c).frac_bits) for c, t in totals.items()}

    columns: dict[str, SecretColumn] = {}
    specs: dict[str, ColumnSpec] = {}
    for name, values in zip(keys, key_values, strict=True):
        columns[name], specs[name] = (
            SecretColumn(party, values, table.spec(name).frac_bits),
            table.spec(name),
        )
    derived: dict[str, tuple[str, ...]] = {}
    count_name = "__count"
    columns[count_name], specs[count_name] = SecretColumn(party, count), ColumnSpec("int")
    for name, (column, function) in aggregations.items():
        spec = table.spec(column)
        value_spec = ColumnSpec(spec.kind if spec.kind != "key" else "int", 0, spec.frac_bits)
        if function == "count":
            columns[name], specs[name] = SecretColumn(party, count), ColumnSpec("int")
        elif function == "sum":
            columns[name], specs[name] = (
                SecretColumn(party, totals[column], spec.frac_bits),
                value_spec,
            )
        elif function == "mean":
            helper = f"__sum_{column}"
            columns[helper] = SecretColumn(party, totals[column], spec.frac_bits)
            specs[helper] = value_spec
            derived[name] = ("mean", helper, count_name)
        else:
            columns[name] = SecretColumn(party, extremes[(column, function)], spec.frac_bits)
            specs[name] = value_spec
            derived[name] = ("extreme", count_name)
    output = SecretTable(party, columns, specs, SecretColumn(party, ends))
    output.derived = derived
    output.output_names = [*keys, *aggregations]
    return output
