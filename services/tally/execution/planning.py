"""How many tuples one worker of a job will consume: a dry plan at two small sizes.

The leader reserves a job's tuples before its workers start (DESIGN §7 ``Reserving``),
so it needs the count per kind.  The engine asks its ``TupleSource`` for the same
batches whatever the values are, so the count is found by running the job's stages
on zero shares of the same schema, all parties in this process, with a recording
dealer.  At full size that would cost as much as the job, so it runs twice, at
``DRY_ROWS`` rows: the built-ins consume a + b·rows tuples of every kind (radix
sort passes depend on key widths, not on rows), and the line through the two dry
runs, taken at the row count rounded up to whole 64-row words (bit-sliced steps
consume per word), bounds the count at the real size; one tuple per request is
added for rounding.

The same two runs predict the shape (rows, column kinds) of every shuffle request,
so a worker can fetch the correlations before its online phase
(:meth:`tally.execution.leases.LeasedSource.prefetch`).

The service runs the plan in a child process (:func:`estimate_tuples_bounded`) with
its address space capped: a job's parameters can make even the small runs large
(``max_groups`` padding, many wide columns), and party 0 must survive the attempt.

What it cannot see is consumption that depends on the data: the number of groups
of a group-by without padding (``max_groups``/``domain``) is opened during the run,
and what follows scales with it.  Custom programs may differ anyway.  Neither is a
problem for correctness: the leases of :mod:`tally.execution.leases` extend a short
reservation at a point every party agrees on.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import resource
from collections.abc import Mapping
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from tally.execution.stages import build_stages, initial_state
from tally.mpc.party import Party
from tally.mpc.program import Program
from tally.mpc.simulate import run_parties
from tally.mpc.table import ColumnSpec, SecretTable
from tally.mpc.tuples import Dealer

log = logging.getLogger(__name__)

DRY_ROWS = (128, 256)
"""Rows of the largest input in the two dry runs (smaller inputs scale with it)."""
WORD = 64

InputsMeta = Mapping[str, tuple[Mapping[str, ColumnSpec], int]]


def kind_name(kind: str, params: tuple[int | str, ...]) -> str:
    """The tuple-service kind of a dealer request (``edabits`` carry their width)."""
    return f"edabits:{params[1]}" if kind == "edabits" else kind


@dataclass(frozen=True)
class DryRun:
    """What one dry run asked its dealer for."""

    counts: dict[str, int]
    """Tuples per kind (shuffles: correlations)."""
    calls: dict[str, int]
    """Requests per kind."""
    shuffles: list[tuple[int, str]]
    """Every shuffle request, in order: (rows, column kinds)."""


@dataclass(frozen=True)
class TuplePlan:
    """One worker's predicted consumption at the job's real size."""

    needs: dict[str, int] = field(default_factory=dict)
    """Tuples per kind, an upper bound for data-independent programs."""
    shuffles: list[tuple[int, str]] | None = None
    """The shuffle requests in order, when both dry runs agree on their shapes."""


def dry_run(
    program: Program,
    inputs: InputsMeta,
    params: Mapping[str, Any],
    parties: int,
    replicated: bool = False,
    plan_rows: int | None = None,
) -> DryRun:
    """What one run on zero shares of these sizes asks its dealer for (``replicated``: on
    the three-party path of :mod:`tally.mpc.replicated`, which asks for no triples)."""
    staged = build_stages(program, inputs, params, plan_rows)
    dealer = Dealer(parties, seed=0)

    def run(party: Party) -> None:
        tables = {
            name: SecretTable.from_shares(
                party,
                {column: np.zeros(rows, np.uint64) for column in specs},
                specs,
                np.zeros(rows, np.uint64),
            )
            for name, (specs, rows) in inputs.items()
        }
        state = initial_state(program, tables)
        for stage in staged.stages:
            state = stage.run(party, state)
        staged.finish(party, state)

    run_parties(parties, run, timeout=120.0, dealer=dealer, replicated=replicated)
    counts: dict[str, int] = {}
    calls: dict[str, int] = {}
    shuffles: list[tuple[int, str]] = []
    for kind, request in dealer.requests:
        name = kind_name(kind, request)
        counts[name] = counts.get(name, 0) + (1 if kind == "shuffle" else int(request[0]))
        calls[name] = calls.get(name, 0) + 1
        if kind == "shuffle":
            shuffles.append((int(request[0]), str(request[1])))
    return DryRun(counts, calls, shuffles)


def _scaled(inputs: InputsMeta, rows: int, largest: int) -> dict[str, tuple[Any, int]]:
    return {
        name: (specs, max(1, round(count * rows / largest)) if count else 0)
        for name, (specs, count) in inputs.items()
    }


def _line(low: float, high: float, at: int) -> float:
    """The value at ``at`` rows of the line through (DRY_ROWS[0], low) and (DRY_ROWS[1], high)."""
    return low + (high - low) / (DRY_ROWS[1] - DRY_ROWS[0]) * (at - DRY_ROWS[0])


def plan_tuples(
    program: Program,
    inputs: InputsMeta,
    params: Mapping[str, Any],
    parties: int,
    replicated: bool = False,
) -> TuplePlan:
    """One worker's consumption at the real size (module docstring); empty if a run fails."""
    largest = max((rows for _, rows in inputs.values()), default=0)
    try:
        if largest <= DRY_ROWS[1]:
            exact = dry_run(program, inputs, params, parties, replicated)
            return TuplePlan(exact.counts, exact.shuffles)
        small, large = (
            dry_run(program, _scaled(inputs, r, largest), params, parties, replicated, largest)
            for r in DRY_ROWS
        )
    except MemoryError:
        raise
    except Exception as error:  # the leases extend what the plan misses
        log.warning("no tuple plan for program %s: %s", program.name, error)
        return TuplePlan()
    # Bit-sliced steps consume per 64-row word: extrapolate to whole words (an upper bound).
    words = -(-largest // WORD) * WORD
    needs = {}
    for kind in sorted(set(small.counts) | set(large.counts)):
        value = _line(small.counts.get(kind, 0), large.counts.get(kind, 0), words)
        margin = 0 if kind == "shuffle" else max(small.calls.get(kind, 0), large.calls.get(kind, 0))
        needs[kind] = max(0, math.ceil(value)) + margin
    shuffles: list[tuple[int, str]] | None = None
    if [k for _, k in small.shuffles] == [k for _, k in large.shuffles]:
        shuffles = [
            (round(_line(low, high, largest)), kinds)
            for (low, kinds), (high, _) in zip(small.shuffles, large.shuffles, strict=True)
        ]
    return TuplePlan(needs, shuffles)


def estimate_tuples(
    program: Program,
    inputs: InputsMeta,
    params: Mapping[str, Any],
    parties: int,
    replicated: bool = False,
) -> dict[str, int]:
    """Tuples per kind one worker needs (see the module docstring); {} if the plan fails."""
    return plan_tuples(program, inputs, params, parties, replicated).needs


class PlanTooLarge(Exception):
    """The dry run needed more memory or time than the service lets it have."""


def _address_space() -> int:
    """This process's virtual memory size in bytes (Linux ``/proc``)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[0]) * resource.getpagesize()


def _plan_in_child(
    conn: Connection,
    limit: int,
    program: Program,
    inputs: InputsMeta,
    params: Mapping[str, Any],
    parties: int,
    replicated: bool,
) -> None:
    try:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        conn.send(("ok", estimate_tuples(program, inputs, params, parties, replicated)))
    except MemoryError:
        conn.send(("memory", {}))
    finally:
        conn.close()


def estimate_tuples_bounded(
    program: Program,
    inputs: InputsMeta,
    params: Mapping[str, Any],
    parties: int,
    *,
    replicated: bool = False,
    memory_bytes: int,
    timeout_s: float,
) -> dict[str, int]:
    """:func:`estimate_tuples` in a forked child that may add ``memory_bytes`` of address space.

    Raises :class:`PlanTooLarge` when the child runs out of memory, dies or outlives
    ``timeout_s``; the caller's memory never grows by more than the answer.
    """
    limit = _address_space() + memory_bytes
    context = multiprocessing.get_context("fork")  # the program object needs no pickling
    receive, send = context.Pipe(duplex=False)
    child = context.Process(
        target=_plan_in_child,
        args=(send, limit, program, inputs, params, parties, replicated),
        daemon=True,
    )
    child.start()
    send.close()
    try:
        if not receive.poll(timeout_s):
            raise PlanTooLarge(
                f"the tuple plan's dry run took longer than {timeout_s:g} s (dry_run_timeout_s)"
            )
        outcome, needs = receive.recv()
    except EOFError:
        raise PlanTooLarge(f"the tuple plan's dry run died (exit {child.exitcode})") from None
    finally:
        if child.is_alive():
            child.kill()
        child.join()
        receive.close()
    if outcome == "memory":
        raise PlanTooLarge(
            f"the tuple plan's dry run needs more than {memory_bytes >> 20} MiB "
            "(dry_run_memory_bytes): ask for fewer groups or columns"
        )
    return dict(needs)
