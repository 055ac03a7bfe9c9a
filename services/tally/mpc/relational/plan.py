"""A small typed logical plan (DESIGN §6.7): Scan, Filter, Derive, Join, Aggregate.

A plan is a tree of frozen dataclasses; :func:`to_json` is its canonical serialisation
(sorted keys, no whitespace, a ``node``/``expr`` tag per object) and :func:`plan_hash`
the SHA-256 of it, the value the parties agree on.  :func:`check` resolves every column
against the input schemas (public specs only) and raises :class:`PlanError` naming the
problem; :func:`execute` checks first, so a bad plan runs nothing.

Expressions: :class:`Col`, :class:`Lit` (public int or float), :class:`Binary`
(``+ - *`` and ``< <= > >= == !=``, ``&`` ``|``), :class:`Not`, :class:`Between`,
:class:`IsIn` (a public set).  What each operator reveals: see filters and join.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Union

from tally.mpc.columns import SecretColumn
from tally.mpc.relational.filters import between, both, derive, either, filter_rows, isin, negate
from tally.mpc.relational.join import pk_fk_join
from tally.mpc.table import ColumnSpec, SecretTable


class PlanError(ValueError):
    """A plan that cannot run (unknown column, bad operator, ...); nothing has run."""


ARITHMETIC = ("+", "-", "*")
COMPARISONS = ("<", "<=", ">", ">=", "==", "!=")
LOGICAL = ("&", "|")
AGGREGATES = ("sum", "count", "mean", "min", "max", "var", "std", "count_distinct")


@dataclass(frozen=True)
class Col:
    name: str


@dataclass(frozen=True)
class Lit:
    value: int | float


@dataclass(frozen=True)
class Binary:
    op: str
    left: Expr
    right: Expr


@dataclass(frozen=True)
class Not:
    operand: Expr


@dataclass(frozen=True)
class Between:
    operand: Expr
    low: int | float
    high: int | float


@dataclass(frozen=True)
class IsIn:
    operand: Expr
    values: tuple[int | float, ...]


Expr = Union[Col, Lit, Binary, Not, Between, IsIn]  # noqa: UP007 - used at run time


@dataclass(frozen=True)
class Scan:
    table: str


@dataclass(frozen=True)
class Filter:
    input: Node
    predicate: Expr


@dataclass(frozen=True)
class Derive:
    input: Node
    name: str
    expr: Expr
    kind: str = "int"
    """``int`` or ``fixed`` (the derived column's spec; fixed keeps the operands' scale)."""


@dataclass(frozen=True)
class Join:
    unique: Node
    many: Node
    on: str


@dataclass(frozen=True)
class Aggregate:
    input: Node
    keys: tuple[str, ...]
    aggregations: tuple[tuple[str, str, str], ...]
    """(output name, column, function) per aggregate."""
    domain: tuple[int, ...] | None = None


Node = Union[Scan, Filter, Derive, Join, Aggregate]  # noqa: UP007 - used at run time

_NODES = (Col, Lit, Binary, Not, Between, IsIn, Scan, Filter, Derive, Join, Aggregate)
_TYPES: dict[str, type] = {t.__name__: t for t in _NODES}


def _plain(value: Any) -> Any:
    if type(value).__name__ in _TYPES:
        out = {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
        out["type"] = type(value).__name__
        return out
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def to_json(plan: Node) -> str:
    """The canonical serialisation: sorted keys, compact separators, ASCII."""
    return json.dumps(_plain(plan), sort_keys=True, separators=(",", ":"), allow_nan=False)


def _build(value: Any) -> Any:
    if isinstance(value, dict):
        kind = value.get("type")
        if kind not in _TYPES:
            raise PlanError(f"unknown plan node or expression {kind!r}")
        cls = _TYPES[kind]
        names = {f.name for f in fields(cls)}
        extra = set(value) - names - {"type"}
        if extra:
            raise PlanError(f"{kind} has no field(s) {sorted(extra)}")
        return cls(**{k: _build(v) for k, v in value.items() if k != "type"})
    if isinstance(value, list):
        return tuple(_build(v) for v in value)
    return value


def from_json(text: str) -> Node:
    """Parse :func:`to_json` output back into a plan (a :class:`PlanError` on bad input)."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as error:
        raise PlanError(f"a plan is JSON: {error}") from None
    try:
        plan = _build(raw)
    except TypeError as error:
        raise PlanError(f"malformed plan: {error}") from None
    if not isinstance(plan, Scan | Filter | Derive | Join | Aggregate):
        raise PlanError("a plan's root is a Scan, Filter, Derive, Join or Aggregate")
    return plan


def plan_hash(plan: Node) -> str:
    """SHA-256 (hex) of the canonical JSON: what the parties agree on."""
    return hashlib.sha256(to_json(plan).encode()).hexdigest()


# -- checking (public schemas only) -------------------------------------------------------


def _check_expr(expr: Expr, schema: Mapping[str, ColumnSpec]) -> None:
    if isinstance(expr, Col):
        if expr.name not in schema:
            raise PlanError(f"unknown column {expr.name!r}; available: {sorted(schema)}")
    elif isinstance(expr, Lit):
        if isinstance(expr.value, bool) or not isinstance(expr.value, int | float):
            raise PlanError(f"a literal is a number, not {expr.value!r}")
    elif isinstance(expr, Binary):
        if expr.op not in ARITHMETIC + COMPARISONS + LOGICAL:
            raise PlanError(f"operator {expr.op!r} is not supported")
        if isinstance(expr.left, Lit) and isinstance(expr.right, Lit):
            raise PlanError("an operation between two literals: compute it before planning")
        if expr.op in LOGICAL and (isinstance(expr.left, Lit) or isinstance(expr.right, Lit)):
            raise PlanError(f"{expr.op!r} combines predicates, not literals")
        _check_expr(expr.left, schema)
        _check_expr(expr.right, schema)
    elif isinstance(expr, Not | Between | IsIn):
        _check_expr(expr.operand, schema)
    else:
        raise PlanError(f"unknown expression {expr!r}")


def _uses_column(expr: Expr) -> bool:
    if isinstance(expr, Col):
        return True
    if isinstance(expr, Binary):
        return _uses_column(expr.left) or _uses_column(expr.right)
    if isinstance(expr, Not | Between | IsIn):
        return _uses_column(expr.operand)
    return False


def _frac(expr: Expr, schema: Mapping[str, ColumnSpec]) -> int:
    """Fractional bits of an expression's value (0 for predicates)."""
    if isinstance(expr, Col):
        return schema[expr.name].frac_bits
    if isinstance(expr, Lit):
        return 0 if float(expr.value).is_integer() else 16
    if isinstance(expr, Binary) and expr.op in ARITHMETIC:
        left, right = _frac(expr.left, schema), _frac(expr.right, schema)
        if expr.op != "*":
            return max(left, right)
        if left and right:
            raise PlanError("fixed-point times fixed-point is not supported (needs truncation)")
        if isinstance(expr.right, Lit) and right or isinstance(expr.left, Lit) and left:
            raise PlanError("multiply by integer constants only")
        return left + right
    return 0


def check(plan: Node, schemas: Mapping[str, Mapping[str, ColumnSpec]]) -> dict[str, ColumnSpec]:
    """The output schema of ``plan`` over input ``schemas``; :class:`PlanError` if it cannot run."""
    if isinstance(plan, Scan):
        if plan.table not in schemas:
            raise PlanError(f"unknown table {plan.table!r}; available: {sorted(schemas)}")
        return dict(schemas[plan.table])
    if isinstance(plan, Filter):
        schema = check(plan.input, schemas)
        _check_expr(plan.predicate, schema)
        return schema
    if isinstance(plan, Derive):
        schema = check(plan.input, schemas)
        _check_expr(plan.expr, schema)
        if not _uses_column(plan.expr):
            raise PlanError(f"derived column {plan.name!r} does not use any column")
        if plan.kind not in ("int", "fixed"):
            raise PlanError(f"a derived column is int or fixed, not {plan.kind!r}")
        if plan.name in schema:
            raise PlanError(f"column {plan.name!r} exists already")
        return {**schema, plan.name: _derived_spec(plan, schema)}
    if isinstance(plan, Join):
        unique, many = check(plan.unique, schemas), check(plan.many, schemas)
        for side, schema in (("unique", unique), ("many", many)):
            if plan.on not in schema:
                raise PlanError(f"unknown join column {plan.on!r} on the {side} side")
        if unique[plan.on] != many[plan.on]:
            raise PlanError(f"join key {plan.on!r} differs between the sides")
        clash = (set(unique) & set(many)) - {plan.on}
        if clash:
            raise PlanError(f"both sides have columns {sorted(clash)}")
        return {**unique, **many}
    if isinstance(plan, Aggregate):
        schema = check(plan.input, schemas)
        for key in plan.keys:
            if key not in schema:
                raise PlanError(f"unknown group-by column {key!r}; available: {sorted(schema)}")
        if not plan.aggregations:
            raise PlanError("an aggregate needs at least one aggregation")
        out = {k: schema[k] for k in plan.keys}
        for name, column, function in plan.aggregations:
            if column not in schema:
                raise PlanError(f"unknown column {column!r}; available: {sorted(schema)}")
            if function not in AGGREGATES:
                raise PlanError(f"aggregate {function!r} is not supported; use {AGGREGATES}")
            out[name] = schema[column] if function != "count" else ColumnSpec()
        return out
    raise PlanError(f"unknown plan node {plan!r}")


def _derived_spec(plan: Derive, schema: Mapping[str, ColumnSpec]) -> ColumnSpec:
    frac = _frac(plan.expr, schema)
    if (plan.kind == "fixed") != bool(frac):
        raise PlanError(
            f"derived column {plan.name!r} is declared {plan.kind} but its expression has "
            f"{frac} fractional bits"
        )
    return ColumnSpec(plan.kind, frac_bits=frac)


# -- execution ----------------------------------------------------------------------------


def _evaluate(expr: Expr, table: SecretTable) -> Any:
    if isinstance(expr, Col):
        return table[expr.name]
    if isinstance(expr, Lit):
        return expr.value
    if isinstance(expr, Not):
        return negate(_evaluate(expr.operand, table))
    if isinstance(expr, Between):
        return between(_evaluate(expr.operand, table), expr.low, expr.high)
    if isinstance(expr, IsIn):
        return isin(_evaluate(expr.operand, table), expr.values)
    assert isinstance(expr, Binary)
    left, right = _evaluate(expr.left, table), _evaluate(expr.right, table)
    if expr.op == "&":
        return both(left, right)
    if expr.op == "|":
        return either(left, right)
    if not isinstance(left, SecretColumn):  # literal on the left: mirror the operator
        mirrored = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}
        if expr.op == "-":
            return -right + left
        if expr.op in mirrored:
            return _compare(right, mirrored[expr.op], left)
        left, right = right, left
    if expr.op == "+":
        return left + right
    if expr.op == "-":
        return left - right
    if expr.op == "*":
        return left * right
    return _compare(left, expr.op, right)


def _compare(left: SecretColumn, op: str, right: Any) -> SecretColumn:
    if op == "<":
        return left.__lt__(right)
    if op == "<=":
        return left.__le__(right)
    if op == ">":
        return left.__gt__(right)
    if op == ">=":
        return left.__ge__(right)
    if op == "==":
        return left.__eq__(right)
    return left.__ne__(right)


def execute(plan: Node, tables: Mapping[str, SecretTable]) -> SecretTable:
    """Run ``plan`` on this party's tables (checked first: a bad plan runs nothing)."""
    check(plan, {name: t.specs for name, t in tables.items()})
    return _run(plan, tables)


def _run(plan: Node, tables: Mapping[str, SecretTable]) -> SecretTable:
    if isinstance(plan, Scan):
        return tables[plan.table]
    if isinstance(plan, Filter):
        table = _run(plan.input, tables)
        return filter_rows(table, _evaluate(plan.predicate, table))
    if isinstance(plan, Derive):
        table = _run(plan.input, tables)
        spec = _derived_spec(plan, table.specs)
        return derive(table, {plan.name: (_evaluate(plan.expr, table), spec)})
    if isinstance(plan, Join):
        return pk_fk_join(_run(plan.unique, tables), _run(plan.many, tables), plan.on)
    assert isinstance(plan, Aggregate)
    table = _run(plan.input, tables)
    aggregations = {name: (column, function) for name, column, function in plan.aggregations}
    domain = list(plan.domain) if plan.domain is not None else None
    return table.group_by(list(plan.keys), domain=domain).agg(**aggregations)
