"""Which program a job runs, what it reads, and checks made before anything runs.

A job names a built-in program (``groupby``, ``sort``, ``sum``, ``count``, ``query``:
a relational plan, :mod:`tally.execution.query`) or any registered program by the
SHA-256 of its source.  Built-ins are always allowed;
any other program must be listed by digest in this party's ``allowed_programs``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from tally.execution import query  # noqa: F401 - registers the query program
from tally.execution.jobs import JobCreate, JobRecord
from tally.execution.ports import DatasetInfo, InputError, InputStore
from tally.execution.settings import ExecutionSettings
from tally.mpc.groupby import FUNCTIONS
from tally.mpc.party import Party
from tally.mpc.program import Program, get_program
from tally.mpc.relational.plan import PlanError
from tally.mpc.ring import Shares
from tally.mpc.table import ColumnSpec, SecretTable

BUILTINS = ("groupby", "sort", "sum", "count", "query")


def resolve_program(name_or_digest: str, settings: ExecutionSettings) -> Program:
    """The program a job names, if this party's policy allows it; else ``InputError``."""
    try:
        program = get_program(name_or_digest)
    except KeyError:
        raise InputError(
            404, "unknown_program", f"no program {name_or_digest!r} is registered at this party"
        ) from None
    builtin = program.name in BUILTINS and name_or_digest in (program.name, program.digest)
    if not builtin and program.digest not in settings.allowed_programs:
        raise InputError(
            403,
            "program_not_allowed",
            f"program {program.name!r} (sha256 {program.digest}) is not allowed by this "
            "party's policy (allowed_programs)",
        )
    if not builtin and name_or_digest != program.digest:
        raise InputError(
            422, "program_not_pinned", "name custom programs by the SHA-256 of their source"
        )
    return program


def dataset_ids(value: str | list[str]) -> list[str]:
    """The dataset ids of one job input (one id, or a list of them)."""
    return [value] if isinstance(value, str) else list(value)


def describe_inputs(
    store: InputStore, spec: JobCreate, submitter: str
) -> dict[str, list[DatasetInfo]]:
    """Every input dataset's metadata, checked: usable, one schema per input, partitions fit."""
    described: dict[str, list[DatasetInfo]] = {}
    for name, ids in spec.inputs.items():
        if not dataset_ids(ids):
            raise InputError(422, "bad_input", f"input {name!r} names no dataset")
        infos = [store.describe(i, submitter, spec.program) for i in dataset_ids(ids)]
        for info in infos[1:]:
            if info.columns != infos[0].columns:
                raise InputError(
                    422,
                    "schema_mismatch",
                    f"datasets {infos[0].id!r} and {info.id!r} of input {name!r} differ in schema",
                )
        for info in infos:
            if spec.partitions > 1 and info.partitions != spec.partitions:
                raise InputError(
                    422,
                    "partition_mismatch",
                    f"dataset {info.id!r} has {info.partitions} partitions; the job asks for "
                    f"{spec.partitions}",
                )
        described[name] = infos
    return described


def check_params(
    program: Program, specs: Mapping[str, ColumnSpec], params: Mapping[str, Any]
) -> None:
    """Catch parameter mistakes of the built-ins before any worker starts."""

    def column(name: Any, what: str) -> None:
        if not isinstance(name, str) or name not in specs:
            raise InputError(
                422, "bad_params", f"{what} {name!r} is not a column; columns: {sorted(specs)}"
            )

    if program.name == "groupby":
        keys = params.get("keys")
        if not isinstance(keys, list) or not keys:
            raise InputError(422, "bad_params", "groupby needs params.keys, a list of key columns")
        for key in keys:
            column(key, "key")
        aggregations = params.get("aggregations")
        if not isinstance(aggregations, dict) or not aggregations:
            raise InputError(
                422, "bad_params", 'groupby needs params.aggregations, e.g. {"n": ["v", "count"]}'
            )
        for name, pair in aggregations.items():
            if not (isinstance(pair, list) and len(pair) == 2 and pair[1] in FUNCTIONS):
                raise InputError(
                    422, "bad_params", f"aggregation {name!r} must be [column, one of {FUNCTIONS}]"
                )
            column(pair[0], "aggregated column")
    elif program.name == "sort":
        for key in params.get("keys") or [None]:
            column(key, "sort key")
    elif program.name == "sum":
        column(params.get("column"), "summed column")


def check_query(
    program: Program,
    inputs: Mapping[str, tuple[Mapping[str, ColumnSpec], int]],
    params: Mapping[str, Any],
) -> None:
    """A query's plan checked against every input's public schema (422 if it cannot run)."""
    if program.name != "query":
        return
    try:
        query.plan_of(params, {name: specs for name, (specs, _) in inputs.items()})
    except PlanError as error:
        raise InputError(422, "bad_plan", f"the query cannot run: {error}") from None


def stage_inputs(
    store: InputStore, record: JobRecord, worker: int, party: int
) -> tuple[dict[str, tuple[dict[str, ColumnSpec], int]], dict[str, dict[str, Shares]]]:
    """This party's shares of one worker's inputs, and per input its specs and row count.

    Several datasets of one input are concatenated; a dataset without a ``valid``
    column has every row valid.
    """
    spec = record.spec
    described = describe_inputs(store, spec, record.submitter)
    meta: dict[str, tuple[dict[str, ColumnSpec], int]] = {}
    loaded: dict[str, dict[str, Shares]] = {}
    partition = worker if spec.partitions > 1 else None
    for name, infos in described.items():
        parts = []
        for info in infos:
            shares = store.read(info, record.submitter, spec.program, partition)
            if "valid" not in shares:
                rows = len(next(iter(shares.values())))
                fill = np.ones if party == 0 else np.zeros
                shares["valid"] = fill(rows, dtype=np.uint64)
            parts.append(shares)
        columns = {c: np.concatenate([p[c] for p in parts]) for c in [*infos[0].columns, "valid"]}
        loaded[name] = columns
        meta[name] = (dict(infos[0].columns), len(columns["valid"]))
    return meta, loaded


def input_tables(
    party: Party,
    meta: Mapping[str, tuple[Mapping[str, ColumnSpec], int]],
    loaded: Mapping[str, Mapping[str, Shares]],
) -> dict[str, SecretTable]:
    """The loaded shares as ``SecretTable`` objects."""
    return {
        name: SecretTable.from_shares(party, columns, meta[name][0], columns["valid"])
        for name, columns in loaded.items()
    }
