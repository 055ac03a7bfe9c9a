"""The built-in ``query`` program: a relational plan over the job's named inputs.

``params.plan`` is a plan of :mod:`tally.mpc.relational.plan` (its canonical JSON
object, or that JSON as a string), or ``params.sql`` one SQL statement that
:mod:`tally.common.sql` compiles into one (the same text compiles to the same plan at
every party); every ``Scan`` names one of the job's inputs.  The
job's spec hash covers the plan, so every party runs the same one; each party's
service checks it against the inputs' public schemas before anything is reserved
(:func:`plan_of`: unknown columns, type and key-width mismatches are a 422).

What a query reveals, to whom: its ``result`` goes only where the job's outputs say
(the owners' ``recipients`` rules apply as to every program); a plan ending in an
``Aggregate`` releases the groups (their keys, and their number unless a ``domain``
is given), any other root releases rows (filtered-out rows stay in the output with
``valid`` 0, so their number is not revealed); a ``Join`` opens one bit to every
party — whether the unique side holds a key twice, which refuses the job.  Because a
plan can release rows and that bit, a dataset's owner must list ``query`` in its
policy's ``programs`` (the default allows the aggregates only); ``min_group_size`` and
``dp`` rules refuse a query (only ``groupby`` honours them).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from tally.common.sql import SqlError, compile_sql
from tally.mpc.program import program
from tally.mpc.relational.plan import Node, PlanError, check, execute, from_json
from tally.mpc.table import ColumnSpec, SecretTable


def parse_plan(value: Any) -> Node:
    """A plan from ``params.plan``: the JSON object or its text (``PlanError`` if bad)."""
    if isinstance(value, str):
        return from_json(value)
    if isinstance(value, dict):
        return from_json(json.dumps(value))
    raise PlanError("params.plan is a relational plan: a JSON object")


def plan_of(params: Mapping[str, Any], inputs: Mapping[str, Mapping[str, ColumnSpec]]) -> Node:
    """The plan a query job's params give, checked against its inputs (``PlanError``)."""
    if set(params) not in ({"plan"}, {"sql"}):
        raise PlanError(f"query takes params.plan or params.sql, not {sorted(params)}")
    if "sql" in params:
        if not isinstance(params["sql"], str):
            raise PlanError("params.sql is one SQL statement (a string)")
        kinds = {name: {c: s.kind for c, s in specs.items()} for name, specs in inputs.items()}
        try:
            plan = compile_sql(params["sql"], kinds).plan
        except SqlError as error:
            raise PlanError(str(error)) from None
    else:
        plan = parse_plan(params["plan"])
    check(plan, inputs)
    return plan


@program("query")
def query(tables: Mapping[str, SecretTable], **params: Any) -> dict[str, SecretTable]:
    """Run a relational plan (params.plan) or SQL (params.sql) over the input tables (by
    input name); output ``result``."""
    plan = plan_of(params, {name: table.specs for name, table in tables.items()})
    return {"result": execute(plan, tables)}
