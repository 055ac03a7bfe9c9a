"""Secure ``group_by(keys).agg(...)``: the headline primitive (DESIGN §6.4).

Steps, for a table of m rows:

0. Under ``dp`` (:mod:`tally.mpc.dp`): at most k rows per privacy unit are kept
   (:func:`bound_contributions`) and every summed column is clipped to its bounds.
1. Padding: with a public ``domain`` append one dummy row (``valid`` = 0,
   ``is_domain`` = 1) per domain key.
2. Weights: every summed column is multiplied by ``valid`` (1 round).
3. Sort by (keys, flag), carrying keys, ``valid``, the flag and the weighted
   columns; the flag is ``valid`` without a domain (so the last row of a group is
   present whenever any row of it is) and ``is_domain`` with one (so a domain
   key's dummy row is the last of its group).
4. Group ends: last_i = 1 - [key_i == key_{i+1}], last_{m-1} = 1 (one equality
   of width total-key-bits + 1 when the keys pack into 62 bits); without a
   domain multiplied by present_i, so a key held only by dummy rows is no group.
5. Running totals of weighted values and of ``valid``: local prefix sums.
6. min / max: one more radix sort by (keys, valid, value) - value descending for
   min - carrying only the value; groups occupy the same rows as in step 3, so
   the last row of each group holds its extreme valid value.
7. Compaction: a one-bit stable sort on 1 - last moves the group ends, in key
   order, to the front, and sums and counts become differences of consecutive
   running totals (local).  Then (:func:`keep_group_ends`):
   * no padding: g = sum(last) is opened (revealed by design) and g rows kept;
   * ``max_groups`` G: the first G rows are kept and multiplied by last (rows
     that are no group end come out as padding: valid 0, zero values), and the
     secret flag [g > G] travels with the output to its recipient, who is
     warned (:class:`tally.mpc.table.GroupsDropped`) when groups were dropped;
   * ``domain`` of D keys: a second one-bit compaction on is_domain keeps
     exactly the D domain groups, in key order: rows whose key lies outside the
     domain form no output row (membership is decided in MPC); absent domain
     keys come out with count 0, as pandas' reindex.
   The padded shapes reveal neither which keys occur nor how many.
8. Means are opened as sum and count and divided by the recipient; ``var`` and
   ``std`` (sample, ddof 1, as pandas) as sum, sum of squares (each valid value
   times itself, 1 round, carried and summed like the sums) and count.  So the
   recipient of a var or std also learns its group's mean.  ``count_distinct``:
   one more sort by (keys, valid, value) carrying keys, value and valid; a row
   counts when it is valid and its (keys, value) differs from the previous valid
   row's (one equality, 2 products); its running count is row-aligned with the
   main sort's groups, so it is differenced like the sums.  Only each group's
   number of distinct values reaches the recipient.
9. Under ``dp``: counts and sums are rounded to their noise's unit and noised
   before any opening.

Opened values: only the uniformly random permutations inside the sorts, the
masked values inside comparisons and products, and, without padding, g.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from tally.mpc.analytics import (
    adjacent_equal,
    flag_key,
    one_minus,
    prefix_sum,
    sort_columns,
    value_keys,
    weighted,
)
from tally.mpc.arithmetic import add_public, multiply, open_values, public_to_shares
from tally.mpc.columns import SecretColumn
from tally.mpc.compare import equal, less_than_zero
from tally.mpc.dp import DP, add_noise, clip
from tally.mpc.party import Party
from tally.mpc.quicksort import AnyKey
from tally.mpc.ring import Shares
from tally.mpc.sort import apply_destinations, bit_destinations
from tally.mpc.table import OVERFLOW_COLUMN, ColumnSpec, SecretTable

if TYPE_CHECKING:
    from tally.mpc.table import GroupBy

FUNCTIONS = ("sum", "count", "mean", "min", "max", "var", "std", "count_distinct")
MOMENTS = ("var", "std")
"""Aggregates opened as sum, sum of squares and count (integer columns only)."""
OVERFLOW = OVERFLOW_COLUMN
MAX_MIN_GROUP = 1 << 30


def _check(
    table: SecretTable,
    keys: Sequence[str],
    aggregations: Mapping[str, Any],
    max_groups: int | None = None,
) -> None:
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
        if function in MOMENTS and table.spec(column).frac_bits:
            raise ValueError(
                f"aggregation {name!r}: {function} of the fixed-point column {column!r} would "
                "need a truncation protocol, which the engine does not have; aggregate an "
                "integer column (scale the values at upload)"
            )
        table.spec(column)
        if name in keys:
            raise ValueError(f"output name {name!r} collides with a key column")


def check_dp(
    aggregations: Mapping[str, Sequence[str]],
    dp: DP | None,
    domain: Sequence[Any] | None = None,
    max_groups: int | None = None,
) -> None:
    """What a group-by under ``dp`` needs, refused with a clear reason otherwise.

    min and max would be opened without noise; without a public ``domain`` the set of
    keys that occur (or its size, or the exact ``valid`` flags of a ``max_groups``
    output) would leave unnoised; every summed column needs clip bounds, from which its
    sensitivity follows.
    """
    if dp is None:
        return
    moments = sorted(name for name, spec in aggregations.items() if spec[1] in MOMENTS)
    if moments:
        raise ValueError(
            f"with dp, var and std are refused ({', '.join(moments)}): a sum of squares has "
            "a sensitivity of the clip bound squared, which drowns a variance in noise; "
            "release a noisy sum and count instead"
        )
    extremes = sorted(name for name, spec in aggregations.items() if spec[1] in ("min", "max"))
    if extremes:
        raise ValueError(
            f"with dp, min and max would be opened without noise ({', '.join(extremes)}): "
            "drop them or dp"
        )
    if domain is None or max_groups is not None:
        raise ValueError(
            "with dp the released keys must not depend on the data: give a public domain "
            "(every domain key is released with a noisy count), not max_groups or no padding"
        )
    missing = [c for c in summed_columns(aggregations) if c not in dp.clip]
    if missing:
        raise ValueError(
            f"with dp every summed column needs clip bounds: set dp.clip for {', '.join(missing)}"
        )


def summed_columns(aggregations: Mapping[str, Sequence[str]]) -> list[str]:
    """The columns a group-by sums (``sum``, ``mean``, ``var``, ``std`` of one column share
    one sum)."""
    summing = ("sum", "mean", *MOMENTS)
    return sorted({spec[0] for spec in aggregations.values() if spec[1] in summing})


def squared_columns(aggregations: Mapping[str, Sequence[str]]) -> list[str]:
    """The columns whose squares a group-by sums (for ``var`` and ``std``)."""
    return sorted({spec[0] for spec in aggregations.values() if spec[1] in MOMENTS})


def squared_weights(
    table: SecretTable, weights: Mapping[str, Shares], squared: Sequence[str]
) -> list[Shares]:
    """valid · x² for each squared column x, from its weight valid · x (1 round)."""
    return multiply(table.party, [(weights[c], table[c].shares) for c in squared])


def distinct_columns(aggregations: Mapping[str, Sequence[str]]) -> list[str]:
    """The columns whose distinct values a group-by counts."""
    return sorted({spec[0] for spec in aggregations.values() if spec[1] == "count_distinct"})


def dp_releases(aggregations: Mapping[str, Sequence[str]]) -> int:
    """How many noisy releases a group-by makes: the count, each summed column and each
    distinct count."""
    return 1 + len(summed_columns(aggregations)) + len(distinct_columns(aggregations))


def dp_epsilon(aggregations: Mapping[str, Sequence[str]], dp: DP) -> float:
    """The epsilon a group-by with ``dp`` spends on its input.

    The count and every summed column (``sum``, ``mean``) get noise of their own, and
    each is an (epsilon, delta) release; by basic composition the job spends their sum.
    Groups are disjoint, so a row lies in one group of each release (parallel
    composition): the number of groups does not multiply the cost.  With a privacy unit
    of k rows, a person's rows may lie in k groups, each of whose rounded release may
    move by one noise unit: basic composition over them multiplies the cost by k.
    """
    factor = dp.max_contributions if dp.unit is not None else 1
    return dp.epsilon * dp_releases(aggregations) * factor


def dp_delta(aggregations: Mapping[str, Sequence[str]], dp: DP) -> float:
    """The delta a group-by with ``dp`` spends on its input (basic composition)."""
    factor = dp.max_contributions if dp.unit is not None else 1
    return dp.delta * dp_releases(aggregations) * factor


def raw_bounds(spec: ColumnSpec, bounds: tuple[float, float]) -> tuple[int, int]:
    """Clip bounds in the column's raw ring units, widened outwards to whole units."""
    scale = 1 << spec.frac_bits if spec.kind == "fixed" else 1
    return math.floor(bounds[0] * scale), math.ceil(bounds[1] * scale)


def bound_contributions(table: SecretTable, unit: str, limit: int) -> SecretTable:
    """Keep at most ``limit`` valid rows per value of the ``unit`` column (inside MPC).

    Sort by (unit, invalid) so that each unit's valid rows come first, then row i is
    beyond its unit's first ``limit`` rows iff unit_i == unit_{i - limit} (the rows are
    sorted): one equality per row, and ``valid`` is multiplied by its complement.
    Reveals nothing (the sort opens only shuffled values); the table comes back in
    unit order.
    """
    party = table.party
    spec = table.spec(unit)
    keys = [*value_keys(table, [unit]), flag_key(one_minus(party, table.valid.shares))]
    names = list(table.columns)
    moved = sort_columns(party, keys, [table[n].shares for n in names] + [table.valid.shares])
    columns = {
        n: SecretColumn(party, moved[i], table.columns[n].frac_bits) for i, n in enumerate(names)
    }
    valid = moved[-1]
    rows = valid.shape[0]
    if rows > limit:
        units = columns[unit].shares
        width = spec.sort_width + 1 if spec.kind == "key" else 64
        repeated = equal(party, units[limit:], units[:-limit], width)
        keep = np.concatenate(
            [public_to_shares(party, np.ones(limit, np.uint64)), one_minus(party, repeated)]
        )
        (valid,) = multiply(party, [(valid, keep)])
    return table.with_columns(columns, table.specs, SecretColumn(party, valid))


def prepare_dp(table: SecretTable, summed: Sequence[str], dp: DP | None) -> SecretTable:
    """Under ``dp``: contributions bounded per privacy unit, summed columns clipped."""
    if dp is None:
        return table
    if dp.unit is not None:
        table = bound_contributions(table, dp.unit, dp.max_contributions)
    party = table.party
    columns = dict(table.columns)
    for name in summed:
        lo, hi = raw_bounds(table.spec(name), dp.clip[name])
        columns[name] = SecretColumn(
            party, clip(party, table[name].shares, lo, hi), columns[name].frac_bits
        )
    return table.with_columns(columns, table.specs)


def check_padding(
    domain: Sequence[Any] | None, max_groups: int | None, min_group_size: int | None = None
) -> None:
    """The padding parameters themselves (shared by the engine and the staged program)."""
    if domain is not None and max_groups is not None:
        raise ValueError("give either domain or max_groups, not both")
    if max_groups is not None and max_groups < 1:
        raise ValueError("max_groups must be at least 1")
    if min_group_size is not None and not (
        isinstance(min_group_size, int) and 1 <= min_group_size <= MAX_MIN_GROUP
    ):
        raise ValueError(f"min_group_size must be an integer in 1..{MAX_MIN_GROUP}")
    if domain is not None:
        if len(domain) == 0:
            raise ValueError("domain must name at least one key")
        if len(set(map(str, domain))) != len(domain):
            raise ValueError("domain values must be distinct")


def _pad_with_domain(
    table: SecretTable, keys: Sequence[str], domain: Sequence[Any]
) -> tuple[SecretTable, Shares]:
    """The table plus one dummy row per domain key, and the ``is_domain`` flags.

    Dummy rows have ``valid`` 0 and zero values; ``is_domain`` is 1 on them and 0 on
    every real row (public positions: the dummy rows are appended).
    """
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
    is_domain = public_to_shares(
        party, np.concatenate([np.zeros(len(table), np.uint64), np.ones(extra, np.uint64)])
    )
    return table.with_columns(columns, table.specs, SecretColumn(party, valid)), is_domain


def _extremes(
    table: SecretTable, group_keys: Sequence[AnyKey], requests: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], Shares]:
    """For each (column, min|max), the column sorted so that each group's last row is extreme.

    ``group_keys``: the group keys as :func:`value_keys` gave them (a radix sort
    bit-decomposes each once, for this sort and the main one).
    """
    party = table.party
    out: dict[tuple[str, str], Shares] = {}
    if not requests:
        return out
    valid_key = flag_key(table.valid.shares)
    for column, function in requests:
        (value_key,) = value_keys(table, [column], descending=function == "min")
        (moved,) = sort_columns(party, [*group_keys, valid_key, value_key], [table[column].shares])
        out[(column, function)] = moved
    return out


def distinct_runs(
    table: SecretTable,
    keys: Sequence[str],
    group_keys: Sequence[AnyKey],
    columns: Sequence[str],
) -> list[Shares]:
    """Per column, the running number of distinct valid (keys, value) pairs, row by row.

    One sort by (keys, valid, value) per column carries the keys, the value and valid
    (:func:`distinct_running`).  Every group occupies the same rows as in the main sort
    (sorted by keys first, the same rows per key), so the running count at a group's
    last row is the number of distinct values up to the end of that group.
    """
    party = table.party
    valid_key = flag_key(table.valid.shares)
    specs = [table.spec(k) for k in keys]
    out = []
    for column in columns:
        (value_key,) = value_keys(table, [column])
        carried = [*(table[k].shares for k in keys), table[column].shares, table.valid.shares]
        moved = sort_columns(party, [*group_keys, valid_key, value_key], carried)
        out.append(distinct_running(party, moved[:-1], [*specs, table.spec(column)], moved[-1]))
    return out


def distinct_running(
    party: Party, values: Sequence[Shares], specs: Sequence[ColumnSpec], valid: Shares
) -> Shares:
    """Running count of the rows that are valid and whose values differ from the previous
    valid row's, for rows sorted by (values..., valid).  Rounds: one equality + 2."""
    if valid.shape[0] < 2:
        return prefix_sum(valid)
    same = adjacent_equal(
        party, [(v, s.sort_width, s.kind == "key") for v, s in zip(values, specs, strict=True)]
    )
    (repeat,) = multiply(party, [(same, valid[:-1])])
    (repeated,) = multiply(party, [(valid[1:], repeat)])
    first = valid.copy()
    first[1:] -= repeated
    return prefix_sum(first)


def _differences(running: Shares) -> Shares:
    previous = np.concatenate([np.zeros(1, dtype=np.uint64), running[:-1]])
    differences: Shares = running - previous
    return differences


def group_end_bits(party: Party, same: Shares, flags: Shares, with_domain: bool) -> Shares:
    """last_i: row i ends a group.  Without a domain only groups with a present row count
    (one product); with one every group ends, and ``flags`` (is_domain) are carried apart."""
    rows = flags.shape[0]
    last = np.concatenate(
        [one_minus(party, same), public_to_shares(party, np.ones(min(rows, 1), np.uint64))]
    )
    if not with_domain:
        (last,) = multiply(party, [(last, flags)])
    return last


def end_payload(
    key_values: Sequence[Shares],
    running: Sequence[Shares],
    extremes: Sequence[Shares],
    flags: Shares,
    last: Shares,
    with_domain: bool,
) -> Shares:
    """The columns compaction moves: keys, running totals, extremes, (is_domain,) last."""
    columns = [*key_values, *running, *extremes, *([flags] if with_domain else []), last]
    if flags.shape[0]:
        return np.stack(columns, axis=1)
    return np.zeros((0, len(columns)), np.uint64)


def aggregate(group: GroupBy, aggregations: Mapping[str, Any], dp: DP | None) -> SecretTable:
    """Run ``group_by(...).agg(...)``; returns the output table (keys first, then aggregates)."""
    table, keys = group.table, group.keys
    _check(table, keys, aggregations, group.max_groups)
    check_padding(group.domain, group.max_groups, group.min_group_size)
    check_dp(aggregations, dp, group.domain, group.max_groups)
    summed = summed_columns(aggregations)
    extreme_requests = sorted({(c, f) for c, f in aggregations.values() if f in ("min", "max")})
    table = prepare_dp(table, summed, dp)
    with_domain = group.domain is not None
    if group.domain is not None:
        table, flags = _pad_with_domain(table, keys, group.domain)
    else:
        flags = table.valid.shares
    party = table.party
    weights = weighted(table, summed) if summed else []
    squared = squared_columns(aggregations)
    squares = squared_weights(
        table, dict(zip(summed, (w.shares for w in weights), strict=True)), squared
    )

    group_keys = value_keys(table, keys)
    extremes = _extremes(table, group_keys, extreme_requests)
    distinct = distinct_columns(aggregations)
    distinct_running_counts = distinct_runs(table, keys, group_keys, distinct)
    # Sort by (keys, flag): a group's last row is present whenever any of its rows is,
    # and with a domain a domain key's dummy row is the last of its group.
    key_list = [*group_keys, flag_key(flags)]
    carried = [table[k].shares for k in keys] + [table.valid.shares, flags]
    ordered = sort_columns(party, key_list, carried + [w.shares for w in weights] + squares)
    width = len(keys)
    key_values, valid, flags = ordered[:width], ordered[width], ordered[width + 1]
    sums = ordered[width + 2 :]

    specs = [table.spec(k) for k in keys]
    same = adjacent_equal(
        party,
        [(v, s.sort_width, s.kind == "key") for v, s in zip(key_values, specs, strict=True)],
    )
    last = group_end_bits(party, same, flags, with_domain)
    running = [prefix_sum(valid)] + [prefix_sum(s) for s in sums] + distinct_running_counts
    payload = end_payload(
        key_values, running, [extremes[r] for r in extreme_requests], flags, last, with_domain
    )
    if payload.shape[0]:
        destinations = bit_destinations(party, one_minus(party, last))
        payload = apply_destinations(party, destinations, payload, "a" * payload.shape[1])

    kept = keep_group_ends(party, payload, width, len(running), group.domain, group.max_groups)
    return _assemble(
        table,
        keys,
        aggregations,
        (summed, squared, distinct),
        extreme_requests,
        kept,
        dp,
        group.min_group_size,
    )


@dataclass
class Kept:
    """The output rows of a group-by before its aggregates are assembled."""

    payload: Shares
    """Keys, per-group counts and sums (already differenced), extremes: one row per output."""
    ends: Shares
    """The output rows' validity (shares)."""
    padded: bool
    """Rows past the real groups are in the output: mask them by ``ends``."""
    overflow: Shares | None = None
    """With ``max_groups``: shares of [more groups than max_groups] (one value)."""


def keep_group_ends(
    party: Party,
    payload: Shares,
    width: int,
    totals: int,
    domain: Sequence[Any] | None,
    max_groups: int | None,
) -> Kept:
    """The output rows of a payload compacted on its last column (group-end bits).

    ``width`` key columns come first, then ``totals`` running totals, the extremes, (with
    a domain, the is_domain flags,) and the group-end bits.
    * Without padding the number of groups g is opened (revealed by design) and g rows
      kept, all valid.
    * With ``max_groups`` G exactly G rows are kept (zero rows appended if the table is
      shorter), their validity the secret group-end bit; the secret overflow flag
      [g > G] (one comparison) goes to the recipient with the output.
    * With a ``domain`` of D keys: after the running totals are differenced over every
      group, a second one-bit compaction on is_domain moves the D domain groups, in key
      order, to the front; groups of keys outside the domain are dropped there, in MPC.
      All D rows are valid: which keys are released is public.
    """
    body = slice(0, payload.shape[1] - (2 if domain is not None else 1))
    last = np.ascontiguousarray(payload[:, -1])
    if domain is not None:
        flags = np.ascontiguousarray(payload[:, -2])
        rows = _with_differences(np.ascontiguousarray(payload[:, body]), width, totals)
        destinations = bit_destinations(party, one_minus(party, flags))
        rows = apply_destinations(party, destinations, rows, "a" * rows.shape[1])
        out = np.ascontiguousarray(rows[: len(domain)])
        return Kept(out, public_to_shares(party, np.ones(len(domain), np.uint64)), False)
    if max_groups is None:
        (groups,) = open_values(party, [np.array([last.sum(dtype=np.uint64)])])
        kept = np.ascontiguousarray(payload[: int(groups[0]), body])
        ones = public_to_shares(party, np.ones(kept.shape[0], np.uint64))
        return Kept(_with_differences(kept, width, totals), ones, False)
    groups = np.array([last.sum(dtype=np.uint64)])
    overflow = less_than_zero(party, add_public(party, np.uint64(0) - groups, max_groups))
    kept = payload[:max_groups]
    if kept.shape[0] < max_groups:
        filler = np.zeros((max_groups - kept.shape[0], kept.shape[1]), np.uint64)
        kept = np.vstack([kept, filler])
    ends = np.ascontiguousarray(kept[:, -1])
    rows = _with_differences(np.ascontiguousarray(kept[:, body]), width, totals)
    return Kept(rows, ends, True, overflow)


def _with_differences(rows: Shares, width: int, totals: int) -> Shares:
    """``rows`` with its running-total columns replaced by consecutive differences."""
    out = rows.copy()
    for index in range(width, width + totals):
        out[:, index] = _differences(rows[:, index]) if rows.shape[0] else rows[:, index]
    return out


def _assemble(
    table: SecretTable,
    keys: Sequence[str],
    aggregations: Mapping[str, Any],
    running_names: tuple[Sequence[str], Sequence[str], Sequence[str]],
    extreme_requests: Sequence[tuple[str, str]],
    kept: Kept,
    dp: DP | None,
    min_group_size: int | None = None,
) -> SecretTable:
    party: Party = table.party
    payload, ends = kept.payload, kept.ends
    width = len(keys)
    summed, squared, distinct = running_names
    key_values = [np.ascontiguousarray(payload[:, i]) for i in range(width)]
    count = np.ascontiguousarray(payload[:, width])
    # Sums of each summed column, of each squared one ("c^2"), distinct counts ("c#").
    moment_names = [*summed, *(f"{c}^2" for c in squared), *(f"{c}#" for c in distinct)]
    totals = {
        c: np.ascontiguousarray(payload[:, width + 1 + i]) for i, c in enumerate(moment_names)
    }
    base = width + 1 + len(moment_names)
    extremes = {
        r: np.ascontiguousarray(payload[:, base + i]) for i, r in enumerate(extreme_requests)
    }
    if kept.padded:
        columns_to_mask = key_values + [count] + list(totals.values()) + list(extremes.values())
        masked = multiply(party, [(c, ends) for c in columns_to_mask])
        key_values = masked[:width]
        count = masked[width]
        totals = dict(zip(totals, masked[width + 1 : width + 1 + len(totals)], strict=True))
        extremes = dict(zip(extremes, masked[width + 1 + len(totals) :], strict=True))
    if dp is not None:
        k = dp.max_contributions
        count = add_noise(party, count, dp, k)
        for column in summed:
            lo, hi = raw_bounds(table.spec(column), dp.clip[column])
            totals[column] = add_noise(party, totals[column], dp, max(abs(lo), abs(hi), 1) * k)
        for column in distinct:  # a unit's k rows move k groups' counts by one each
            totals[f"{column}#"] = add_noise(party, totals[f"{column}#"], dp, k)
    if min_group_size is not None and min_group_size > 1 and count.shape[0]:
        # [count >= k] from the (noisy, under dp) count, then everything times it
        large = one_minus(
            party,
            less_than_zero(party, add_public(party, count, np.uint64(-min_group_size % (1 << 64)))),
        )
        columns_to_mask = [*key_values, count, *totals.values(), *extremes.values(), ends]
        masked = multiply(party, [(c, large) for c in columns_to_mask])
        key_values, count = masked[:width], masked[width]
        totals = dict(zip(totals, masked[width + 1 : width + 1 + len(totals)], strict=True))
        extremes = dict(zip(extremes, masked[width + 1 + len(totals) : -1], strict=True))
        ends = masked[-1]

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
        elif function == "count_distinct":
            columns[name] = SecretColumn(party, totals[f"{column}#"])
            specs[name] = ColumnSpec("int")
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
        elif function in MOMENTS:
            helper, square = f"__sum_{column}", f"__sumsq_{column}"
            columns[helper] = SecretColumn(party, totals[column], spec.frac_bits)
            columns[square] = SecretColumn(party, totals[f"{column}^2"])
            specs[helper], specs[square] = value_spec, ColumnSpec("int")
            derived[name] = (function, helper, square, count_name)
        else:
            columns[name] = SecretColumn(party, extremes[(column, function)], spec.frac_bits)
            specs[name] = value_spec
            derived[name] = ("extreme", count_name)
    names = [*keys, *aggregations]
    if kept.overflow is not None:
        flag = np.repeat(kept.overflow, payload.shape[0])
        columns[OVERFLOW], specs[OVERFLOW] = SecretColumn(party, flag), ColumnSpec("int")
    output = SecretTable(party, columns, specs, SecretColumn(party, ends))
    output.derived = derived
    output.output_names = names
    return output
