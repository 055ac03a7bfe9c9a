"""Programs as lists of stages, so a job can checkpoint between them and resume (DESIGN §7).

A stage is a function from a :class:`State` (named share arrays plus small public
values) to the next state; the state after stage k is what a party checkpoints.
Every party builds the same list from public information only (program, params,
column specs, row counts), so "stage k of K" means the same thing everywhere.

* ``groupby`` follows :func:`tally.mpc.groupby.aggregate` step by step: prepare
  (padding, weights), for min/max the extra sorts' keys and passes, the key
  sort's keys, one stage per radix pass (:func:`tally.mpc.sort.radix_pass`),
  group ends, compaction, assemble.  It consumes the same tuples in the same
  order as the engine's own ``group_by().agg()``, so a staged run and an
  unstaged run with the same tuples give the same shares (a test checks this).
* ``sort``: keys, one stage per radix pass, assemble.
* every other program (``sum``, ``count``, custom programs) is a single stage.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tally.mpc import groupby as engine_groupby
from tally.mpc import sorting
from tally.mpc.analytics import (
    adjacent_equal,
    bit_key,
    merge_keys,
    one_minus,
    prefix_sum,
    sort_keys,
    weighted,
)
from tally.mpc.columns import SecretColumn
from tally.mpc.dp import DP
from tally.mpc.party import Party
from tally.mpc.program import Program
from tally.mpc.ring import Shares
from tally.mpc.sort import (
    RadixProgress,
    SortKey,
    apply_destinations,
    bit_destinations,
    key_from_values,
    radix_pass,
    radix_passes,
    radix_start,
)
from tally.mpc.table import ColumnSpec, SecretTable


@dataclass
class State:
    """What a party holds between two stages: share arrays and public values (JSON-able)."""

    arrays: dict[str, Shares] = field(default_factory=dict)
    public: dict[str, Any] = field(default_factory=dict)


StageFunction = Callable[[Party, State], State]


@dataclass(frozen=True)
class Stage:
    """One checkpointable step of a program."""

    name: str
    run: StageFunction


@dataclass(frozen=True)
class StagedProgram:
    """A program cut into stages, and how to turn the last state into output tables."""

    stages: list[Stage]
    finish: Callable[[Party, State], dict[str, SecretTable]]


# -- tables <-> states --------------------------------------------------------------------------


def table_to_state(table: SecretTable, prefix: str, state: State) -> None:
    """Store a table's columns, ``valid`` and specs in ``state`` under ``prefix``."""
    for name, column in table.columns.items():
        state.arrays[f"{prefix}col:{name}"] = column.shares
    state.arrays[f"{prefix}valid"] = table.valid.shares
    state.public[f"{prefix}specs"] = {
        name: [s.kind, s.bits, s.frac_bits] for name, s in table.specs.items()
    }
    state.public[f"{prefix}derived"] = {k: list(v) for k, v in table.derived.items()}
    state.public[f"{prefix}order"] = table.output_names


def table_from_state(party: Party, state: State, prefix: str) -> SecretTable:
    """The table :func:`table_to_state` stored."""
    specs = {
        name: ColumnSpec(kind, bits, frac)
        for name, (kind, bits, frac) in state.public[f"{prefix}specs"].items()
    }
    columns = {
        name: SecretColumn(party, state.arrays[f"{prefix}col:{name}"], spec.frac_bits)
        for name, spec in specs.items()
    }
    table = SecretTable(party, columns, specs, SecretColumn(party, state.arrays[f"{prefix}valid"]))
    table.derived = {k: tuple(v) for k, v in state.public.get(f"{prefix}derived", {}).items()}
    table.output_names = state.public.get(f"{prefix}order")
    return table


def _put_progress(state: State, name: str, progress: RadixProgress) -> None:
    for index, key in enumerate(progress.pending):
        state.arrays[f"{name}:key{index}"] = key.words
    state.arrays[f"{name}:payload"] = progress.payload
    state.public[name] = {
        "keys": [[k.width, k.descending] for k in progress.pending],
        "position": progress.position,
        "kinds": progress.kinds,
    }


def _get_progress(state: State, name: str) -> RadixProgress:
    info = state.public[name]
    pending = [
        SortKey(state.arrays[f"{name}:key{i}"], width, descending)
        for i, (width, descending) in enumerate(info["keys"])
    ]
    return RadixProgress(pending, info["position"], state.arrays[f"{name}:payload"], info["kinds"])


def _without(state: State, prefix: str) -> State:
    arrays = {k: v for k, v in state.arrays.items() if not k.startswith(prefix)}
    public = {k: v for k, v in state.public.items() if not k.startswith(prefix)}
    return State(arrays, public)


def _key_widths(specs: Sequence[ColumnSpec], extra: Sequence[int] = ()) -> list[int]:
    """Widths of the merged sort keys for these columns (public: from the specs only)."""
    empty = np.zeros(0, np.uint64)
    keys = [SortKey(empty, s.sort_width) for s in specs] + [SortKey(empty, w) for w in extra]
    return [k.width for k in merge_keys(keys)]


def _sort_stages(name: str, passes: int) -> list[Stage]:
    def run(party: Party, state: State) -> State:
        progress = radix_pass(party, _get_progress(state, name))
        out = State(dict(state.arrays), dict(state.public))
        out = _without(out, f"{name}:")
        _put_progress(out, name, progress)
        return out

    return [Stage(f"{name} pass {i + 1}/{passes}", run) for i in range(passes)]


# -- group-by -------------------------------------------------------------------------------------


def groupby_stages(
    specs: Mapping[str, ColumnSpec],
    rows: int,
    *,
    keys: Sequence[str],
    aggregations: Mapping[str, Sequence[str]],
    domain: Sequence[Any] | None = None,
    max_groups: int | None = None,
    min_group_size: int | None = None,
    dp: Mapping[str, Any] | None = None,
    plan_rows: int | None = None,
) -> StagedProgram:
    """``group_by(keys).agg(**aggregations)`` as stages; see :mod:`tally.mpc.groupby`.

    The main sort is the one :func:`tally.mpc.sorting.choose_sort` plans for the job's
    size (``plan_rows`` when given: a dry run at a smaller size takes the real job's
    choice).  A radix sort is one stage per pass; a quicksort is one stage (a stage
    interrupted by a lost peer resumes from the sort's start).
    """
    keys = list(keys)
    named = {name: (spec[0], spec[1]) for name, spec in aggregations.items()}
    noise = DP.from_params(dp) if dp else None
    engine_groupby.check_padding(domain, max_groups, min_group_size)
    engine_groupby.check_dp(named, noise, domain, max_groups)
    with_domain = domain is not None
    padded_rows = rows + (len(domain) if domain is not None else 0)
    summed = engine_groupby.summed_columns(named)
    squared = engine_groupby.squared_columns(named)
    distinct = engine_groupby.distinct_columns(named)
    extreme_requests = sorted({(c, f) for c, f in named.values() if f in ("min", "max")})
    key_specs = [specs[k] for k in keys]
    group_widths = _key_widths(key_specs)
    stages: list[Stage] = []

    def prepare(party: Party, state: State) -> State:
        table = table_from_state(party, state, "in:")
        group = table.group_by(
            keys, domain=domain, max_groups=max_groups, min_group_size=min_group_size
        )
        engine_groupby._check(table, keys, named, max_groups)
        table = engine_groupby.prepare_dp(table, summed, noise)
        if group.domain is not None:
            table, present = engine_groupby._pad_with_domain(table, keys, group.domain)
        else:
            present = table.valid.shares
        out = State()
        table_to_state(table, "t:", out)
        out.arrays["present"] = present
        for column, product in zip(summed, weighted(table, summed) if summed else [], strict=True):
            out.arrays[f"w:{column}"] = product.shares
        weights = {c: out.arrays[f"w:{c}"] for c in summed}
        squares = engine_groupby.squared_weights(table, weights, squared)
        for column, square in zip(squared, squares, strict=True):
            out.arrays[f"q:{column}"] = square
        return out

    stages.append(Stage("prepare", prepare))

    if extreme_requests or distinct:

        def extreme_keys(party: Party, state: State) -> State:
            table = table_from_state(party, state, "t:")
            out = State(dict(state.arrays), dict(state.public))
            group_keys = sort_keys(table, keys)
            for index, key in enumerate(group_keys):
                out.arrays[f"gk{index}"] = key.words
            out.arrays["vk"] = bit_key(party, table.valid.shares).words
            return out

        stages.append(Stage("extremes: keys", extreme_keys))
        for number, (column, function) in enumerate(extreme_requests):
            stages.extend(
                _extreme_stages(number, column, function, specs, group_widths, padded_rows)
            )
        for number, column in enumerate(distinct):
            stages.extend(_distinct_stages(number, column, keys, specs, group_widths, padded_rows))

    def main_keys(party: Party, state: State) -> State:
        table = table_from_state(party, state, "t:")
        present = state.arrays["present"]
        if extreme_requests or distinct:  # decomposed once, by "extremes: keys"
            group_keys = [
                SortKey(state.arrays[f"gk{i}"], width) for i, width in enumerate(group_widths)
            ]
        else:
            group_keys = sort_keys(table, keys)
        key_list = merge_keys([*group_keys, bit_key(party, present)])
        carried = [table[k].shares for k in keys] + [table.valid.shares, present]
        columns = carried + [state.arrays[f"w:{c}"] for c in summed]
        columns += [state.arrays[f"q:{c}"] for c in squared]
        out = State(dict(state.arrays), dict(state.public))
        for prefix in ("w:", "q:", "gk", "vk", "present"):
            out = _without(out, prefix)
        # From here on only the input's specs are read (by assemble): its arrays are
        # carried empty, so that checkpoints and memory hold the sort's payload only.
        for name in [k for k in out.arrays if k.startswith("t:")]:
            out.arrays[name] = np.zeros(0, np.uint64)
        if quick:
            out.arrays["sorted"] = sorting.sort_rows(
                party, key_list, np.stack(columns, axis=1), method="quick"
            )
        else:
            _put_progress(out, "sort", radix_start(key_list, np.stack(columns, axis=1)))
        return out

    main_widths = _key_widths(key_specs, [1])
    planned = (plan_rows if plan_rows is not None else rows) + (padded_rows - rows)
    quick = sorting.choose_sort(main_widths, planned) == "quick"
    if quick:
        stages.append(Stage("sort: quicksort", main_keys))
    else:
        stages.append(Stage("sort: keys", main_keys))
        stages.extend(_sort_stages("sort", radix_passes(main_widths, padded_rows)))

    def group_ends(party: Party, state: State) -> State:
        moved = state.arrays["sorted"] if quick else _get_progress(state, "sort").payload
        ordered = [np.ascontiguousarray(moved[:, i]) for i in range(moved.shape[1])]
        width = len(keys)
        key_values, valid, present = ordered[:width], ordered[width], ordered[width + 1]
        sums = ordered[width + 2 :]
        count = valid.shape[0]
        same = adjacent_equal(
            party,
            [
                (v, s.sort_width, s.kind == "key")
                for v, s in zip(key_values, key_specs, strict=True)
            ],
        )
        last = engine_groupby.group_end_bits(party, same, present, with_domain)
        running = [prefix_sum(valid)] + [prefix_sum(s) for s in sums]
        running += [state.arrays[f"d{i}"] for i in range(len(distinct))]
        extremes = [state.arrays[f"x{i}"] for i in range(len(extreme_requests))]
        payload = engine_groupby.end_payload(
            key_values, running, extremes, present, last, with_domain
        )
        out = State(
            {k: v for k, v in state.arrays.items() if k.startswith("t:")}, dict(state.public)
        )
        out = _without(out, "sort")
        out.arrays["payload"] = payload
        if count:
            out.arrays["destinations"] = bit_destinations(party, one_minus(party, last))
        return out

    def compaction(party: Party, state: State) -> State:
        payload = state.arrays["payload"]
        if payload.shape[0]:
            payload = apply_destinations(
                party, state.arrays["destinations"], payload, "a" * payload.shape[1]
            )
        kept = engine_groupby.keep_group_ends(
            *(party, payload, len(keys), 1 + len(summed) + len(squared) + len(distinct)),
            domain,
            max_groups,
        )
        out = State(
            {k: v for k, v in state.arrays.items() if k.startswith("t:")}, dict(state.public)
        )
        out.arrays["payload"], out.arrays["ends"] = np.ascontiguousarray(kept.payload), kept.ends
        if kept.overflow is not None:
            out.arrays["overflow"] = kept.overflow
        out.public["padded"] = kept.padded
        return out

    def assemble(party: Party, state: State) -> State:
        table = table_from_state(party, state, "t:")
        output = engine_groupby._assemble(
            table,
            keys,
            named,
            (summed, squared, distinct),
            extreme_requests,
            engine_groupby.Kept(
                state.arrays["payload"],
                state.arrays["ends"],
                bool(state.public["padded"]),
                state.arrays.get("overflow"),
            ),
            noise,
            min_group_size,
        )
        out = State()
        table_to_state(output, "out:result:", out)
        return out

    stages += [
        Stage("group ends", group_ends),
        Stage("compaction", compaction),
        Stage("assemble", assemble),
    ]
    return StagedProgram(stages, _finish_outputs)


def _extreme_stages(
    number: int,
    column: str,
    function: str,
    specs: Mapping[str, ColumnSpec],
    group_widths: Sequence[int],
    rows: int,
) -> list[Stage]:
    name = f"extreme{number}"
    spec = specs[column]

    def value_key(party: Party, state: State) -> State:
        table = table_from_state(party, state, "t:")
        group_keys = [
            SortKey(state.arrays[f"gk{i}"], width) for i, width in enumerate(group_widths)
        ]
        valid_key = SortKey(state.arrays["vk"], 1)
        key = key_from_values(
            party, table[column].shares, spec.sort_width, spec.sort_offset, function == "min"
        )
        out = State(dict(state.arrays), dict(state.public))
        payload = np.stack([table[column].shares], axis=1)
        keys = merge_keys([*group_keys, valid_key, key])  # as tally.mpc.sorting does
        _put_progress(out, name, radix_start(keys, payload))
        return out

    def collect(party: Party, state: State) -> State:
        out = _without(State(dict(state.arrays), dict(state.public)), f"{name}")
        out.arrays[f"x{number}"] = np.ascontiguousarray(_get_progress(state, name).payload[:, 0])
        return out

    widths = _value_sort_widths(group_widths, spec.sort_width, function == "min")
    passes = radix_passes(widths, rows)
    label = f"{function}({column})"
    sorts = _sort_stages(name, passes)
    sorts = [Stage(f"{label}: {s.name.split(' ', 1)[1]}", s.run) for s in sorts]
    # The collection is local; it rides on the last pass so every stage communicates.
    if sorts:
        last = sorts[-1]
        sorts[-1] = Stage(last.name, lambda party, state: collect(party, last.run(party, state)))
    return (
        [Stage(f"{label}: value key", value_key), *sorts]
        if sorts
        else [
            Stage(
                f"{label}: value key", lambda party, state: collect(party, value_key(party, state))
            )
        ]
    )


def _value_sort_widths(
    group_widths: Sequence[int], value_width: int, descending: bool = False
) -> list[int]:
    """The merged key widths of a sort by (group keys, valid, value): its radix passes."""
    empty = np.zeros(0, np.uint64)
    keys = [SortKey(empty, w) for w in group_widths]
    keys += [SortKey(empty, 1), SortKey(empty, value_width, descending)]
    return [k.width for k in merge_keys(keys)]


def _distinct_stages(
    number: int,
    column: str,
    keys: Sequence[str],
    specs: Mapping[str, ColumnSpec],
    group_widths: Sequence[int],
    rows: int,
) -> list[Stage]:
    """count_distinct(column): the sort by (keys, valid, value) carrying keys, value and
    valid, one stage per pass, then the running distinct count (``d<number>``), as
    :func:`tally.mpc.groupby.distinct_runs` does in one go."""
    name = f"distinct{number}"
    spec = specs[column]
    carried_specs = [*(specs[k] for k in keys), spec]

    def value_key(party: Party, state: State) -> State:
        table = table_from_state(party, state, "t:")
        group_keys = [
            SortKey(state.arrays[f"gk{i}"], width) for i, width in enumerate(group_widths)
        ]
        key = key_from_values(party, table[column].shares, spec.sort_width, spec.sort_offset)
        carried = [*(table[k].shares for k in keys), table[column].shares, table.valid.shares]
        out = State(dict(state.arrays), dict(state.public))
        keys_list = merge_keys([*group_keys, SortKey(state.arrays["vk"], 1), key])
        _put_progress(out, name, radix_start(keys_list, np.stack(carried, axis=1)))
        return out

    def count(party: Party, state: State) -> State:
        moved = _get_progress(state, name).payload
        columns = [np.ascontiguousarray(moved[:, i]) for i in range(moved.shape[1])]
        out = _without(State(dict(state.arrays), dict(state.public)), name)
        running = engine_groupby.distinct_running(party, columns[:-1], carried_specs, columns[-1])
        out.arrays[f"d{number}"] = running
        return out

    widths = _value_sort_widths(group_widths, spec.sort_width)
    label = f"count_distinct({column})"
    sorts = [
        Stage(f"{label}: {s.name.split(' ', 1)[1]}", s.run)
        for s in _sort_stages(name, radix_passes(widths, rows))
    ]
    return [
        Stage(f"{label}: value key", value_key),
        *sorts,
        Stage(f"{label}: count", count),
    ]


# -- sort, and single-stage programs ------------------------------------------------------------


def sort_stages(
    specs: Mapping[str, ColumnSpec], rows: int, *, keys: Sequence[str], descending: bool = False
) -> StagedProgram:
    """``sort_by(keys)`` as stages: keys, one stage per radix pass, assemble."""
    names = list(keys)
    if not names:
        raise ValueError("sort needs at least one key column")
    widths = _key_widths([specs[k] for k in names])

    def start(party: Party, state: State) -> State:
        table = table_from_state(party, state, "in:")
        key_list = sort_keys(table, names, descending)
        order = list(table.columns)
        payload = np.stack([table[n].shares for n in order] + [table.valid.shares], axis=1)
        out = State({}, {"in:specs": state.public["in:specs"], "order": order})
        _put_progress(out, "sort", radix_start(key_list, payload))
        return out

    def assemble(party: Party, state: State) -> State:
        moved = _get_progress(state, "sort").payload
        out = State({}, {"out:result:specs": state.public["in:specs"]})
        for index, name in enumerate(state.public["order"]):
            out.arrays[f"out:result:col:{name}"] = np.ascontiguousarray(moved[:, index])
        out.arrays["out:result:valid"] = np.ascontiguousarray(moved[:, -1])
        return out

    stages = [Stage("sort: keys", start), *_sort_stages("sort", radix_passes(widths, rows))]
    return StagedProgram([*stages, Stage("assemble", assemble)], _finish_outputs)


def single_stage(
    program: Program, input_names: Sequence[str], params: Mapping[str, Any]
) -> StagedProgram:
    """Any program as one stage: a resume reruns it from its inputs (with fresh tuples)."""

    def run(party: Party, state: State) -> State:
        tables = {
            name: table_from_state(party, state, f"in{index}:")
            for index, name in enumerate(input_names)
        }
        outputs = program(tables, **params)
        out = State()
        for name, table in outputs.items():
            table_to_state(table, f"out:{name}:", out)
        return out

    return StagedProgram([Stage(program.name, run)], _finish_outputs)


def _finish_outputs(party: Party, state: State) -> dict[str, SecretTable]:
    names = sorted(
        {
            key.split(":")[1]
            for key in state.public
            if key.startswith("out:") and key.endswith(":specs")
        }
    )
    return {name: table_from_state(party, state, f"out:{name}:") for name in names}


def build_stages(
    program: Program,
    inputs: Mapping[str, tuple[Mapping[str, ColumnSpec], int]],
    params: Mapping[str, Any],
    plan_rows: int | None = None,
) -> StagedProgram:
    """The stage list of a job: built-in groupby and sort are staged, the rest single-stage.

    ``inputs``: per input name, its column specs and row count (public metadata);
    ``plan_rows``: the real job's rows when these are a dry run's smaller ones (the
    group-by then plans its sort as the job will).
    The initial state holds the single input of a staged built-in under ``in:``,
    and input i of any other program under ``in<i>:``.
    """
    if program.name in ("groupby", "sort") and _is_builtin(program):
        if len(inputs) != 1:
            raise ValueError(f"{program.name} takes one input table, got {len(inputs)}")
        specs, rows = next(iter(inputs.values()))
        if program.name == "groupby":
            return groupby_stages(specs, rows, **params, plan_rows=plan_rows)
        return sort_stages(specs, rows, **params)
    return single_stage(program, list(inputs), params)


def _is_builtin(program: Program) -> bool:
    from tally.mpc import programs

    return getattr(programs, program.name if program.name != "sum" else "total", None) is program


def initial_state(program: Program, tables: Mapping[str, SecretTable]) -> State:
    """The state before stage 1: the input tables, as :func:`build_stages` expects them."""
    state = State()
    if program.name in ("groupby", "sort") and _is_builtin(program):
        table_to_state(next(iter(tables.values())), "in:", state)
    else:
        for index, table in enumerate(tables.values()):
            table_to_state(table, f"in{index}:", state)
    return state
