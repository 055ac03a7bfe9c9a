"""Polars-style relational queries: ``tally.col``, ``join``, ``filter``, ``with_columns``.

    views = cluster.table("views")
    purchases = cluster.table("purchases")
    (views.join(purchases, on="user_id")            # purchases: one row per user_id
          .filter(tally.col("age") >= 18)
          .with_columns(revenue=tally.col("price") * tally.col("qty"))
          .group_by("campaign")
          .agg(revenue=("revenue", "sum"), buyers=("revenue", "count"))
          .to_pandas())

Each step adds a node to a relational plan (:mod:`tally.mpc.relational.plan`), checked
here against the tables' public schemas as it is built, so a wrong column or type is
an error before anything is submitted; ``agg`` makes a :class:`~tally.client.table.Query`
running the ``query`` program, which every party checks again.  ``a.join(b, on=k)``
keeps ``a``'s rows and takes ``b``'s columns from its row with the same ``k``: ``b``'s
key must be unique (a duplicate refuses the job).  What a query reveals: the group
keys and aggregates to you; the join's duplicate bit to every party (docs/relational.md).
Every dataset's owner must allow the ``query`` program.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from tally.client.errors import InputError
from tally.mpc.relational import plan as ir
from tally.mpc.table import ColumnSpec

if TYPE_CHECKING:
    from tally.client.table import Query, Table

FUNCTIONS = ("sum", "count", "mean", "min", "max", "var", "std", "count_distinct")


class Expression:
    """A column expression: ``col("a") * 2 + col("b")``, ``col("age") >= 18``,
    ``(col("x") > 0) & ~col("region").isin([1, 2])``, ``col("v").between(0, 9)``."""

    def __init__(self, node: ir.Expr) -> None:
        self.node = node

    def _binary(self, op: str, other: Any, reflected: bool = False) -> Expression:
        right = _lift(other)
        return Expression(
            ir.Binary(op, right, self.node) if reflected else ir.Binary(op, self.node, right)
        )

    def __add__(self, other: Any) -> Expression:
        return self._binary("+", other)

    def __radd__(self, other: Any) -> Expression:
        return self._binary("+", other, reflected=True)

    def __sub__(self, other: Any) -> Expression:
        return self._binary("-", other)

    def __rsub__(self, other: Any) -> Expression:
        return self._binary("-", other, reflected=True)

    def __mul__(self, other: Any) -> Expression:
        return self._binary("*", other)

    def __rmul__(self, other: Any) -> Expression:
        return self._binary("*", other, reflected=True)

    def __lt__(self, other: Any) -> Expression:
        return self._binary("<", other)

    def __le__(self, other: Any) -> Expression:
        return self._binary("<=", other)

    def __gt__(self, other: Any) -> Expression:
        return self._binary(">", other)

    def __ge__(self, other: Any) -> Expression:
        return self._binary(">=", other)

    def __eq__(self, other: Any) -> Expression:  # type: ignore[override]
        return self._binary("==", other)

    def __ne__(self, other: Any) -> Expression:  # type: ignore[override]
        return self._binary("!=", other)

    def __and__(self, other: Any) -> Expression:
        return self._binary("&", other)

    def __or__(self, other: Any) -> Expression:
        return self._binary("|", other)

    def __invert__(self) -> Expression:
        return Expression(ir.Not(self.node))

    def __bool__(self) -> bool:
        raise InputError("a secret expression has no truth value here: combine with & | ~")

    __hash__ = None  # type: ignore[assignment]

    def between(self, low: int | float, high: int | float) -> Expression:
        """low <= value <= high (public bounds)."""
        return Expression(ir.Between(self.node, low, high))

    def isin(self, values: Sequence[int | float]) -> Expression:
        """value in a public set of numbers."""
        return Expression(ir.IsIn(self.node, tuple(values)))


def col(name: str) -> Expression:
    """A column by name."""
    return Expression(ir.Col(name))


def _lift(value: Any) -> ir.Expr:
    if isinstance(value, Expression):
        return value.node
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(f"{value!r}: combine columns with numbers or other columns")
    return ir.Lit(value)


class Relation:
    """A plan under construction over named tables, with its public output schema."""

    def __init__(self, node: ir.Node, tables: Mapping[str, Table]) -> None:
        self.node = node
        self.tables = dict(tables)
        try:
            self.schema = ir.check(node, schemas_of(self.tables))
        except ir.PlanError as error:
            raise InputError(str(error)) from None

    @classmethod
    def of(cls, table: Table) -> Relation:
        """A table as a plan input, named after its datasets."""
        name = re.sub(r"[^A-Za-z0-9_]", "_", table.label)[:64] or "table"
        return cls(ir.Scan(name), {name: table})

    def join(self, other: Table | Relation, on: str) -> Relation:
        """Inner PK–FK join: these rows, with ``other``'s columns of the same ``on``."""
        right = other if isinstance(other, Relation) else Relation.of(other)
        if set(right.tables) & set(self.tables):
            raise InputError("a table cannot be joined with itself")
        return Relation(ir.Join(right.node, self.node, on), {**self.tables, **right.tables})

    def filter(self, predicate: Expression) -> Relation:
        """Keep the rows where ``predicate`` holds (the others stay with valid 0)."""
        if not isinstance(predicate, Expression):
            raise InputError("filter() takes an expression, e.g. tally.col('age') >= 18")
        return Relation(ir.Filter(self.node, predicate.node), self.tables)

    def with_columns(self, **columns: Expression) -> Relation:
        """Add computed columns: ``revenue=col("price") * col("qty")``."""
        relation = self
        for name, expression in columns.items():
            if not isinstance(expression, Expression):
                raise InputError(f"with_columns({name}=…) takes an expression")
            fixed = any(
                relation.schema[c].kind == "fixed"
                for c in _columns(expression.node)
                if c in relation.schema
            )
            node = ir.Derive(relation.node, name, expression.node, "fixed" if fixed else "int")
            relation = Relation(node, relation.tables)
        return relation

    def group_by(self, keys: str | Sequence[str]) -> RelationGroupBy:
        """Group by key columns; :meth:`RelationGroupBy.agg` makes the query."""
        names = [keys] if isinstance(keys, str) else list(keys)
        if not names:
            raise InputError("group_by needs at least one key column")
        return RelationGroupBy(self, names)


class RelationGroupBy:
    """``relation.group_by(keys)``; :meth:`agg` makes the query."""

    def __init__(self, relation: Relation, keys: list[str]) -> None:
        self.relation = relation
        self.keys = keys

    def agg(self, having: Expression | None = None, **aggregations: tuple[str, str]) -> Query:
        """``agg(total=("amount", "sum"), n=("amount", "count"))``.

        ``having``: a predicate over the keys and these aggregates, e.g.
        ``having=tally.col("n") >= 10``, as SQL's HAVING: the groups it drops stay in the
        output with valid 0, so which groups were dropped is not opened.
        """
        if having is not None and not isinstance(having, Expression):
            raise InputError("having= takes an expression, e.g. tally.col('n') >= 10")
        if not aggregations:
            raise InputError('agg() needs at least one aggregation, e.g. n=("amount", "count")')
        named = []
        for name, pair in aggregations.items():
            if not (isinstance(pair, tuple | list) and len(pair) == 2 and pair[1] in FUNCTIONS):
                raise InputError(f"aggregation {name!r}: give (column, one of {FUNCTIONS})")
            named.append((name, str(pair[0]), str(pair[1])))
        node: ir.Node = ir.Aggregate(self.relation.node, tuple(self.keys), tuple(named))
        if having is not None:
            node = ir.Filter(node, having.node)
        relation = Relation(node, self.relation.tables)  # checks the aggregate (and having)
        text = ", ".join(f"{n}={c}:{f}" for n, c, f in named)
        if having is not None:
            text += ", having"
        description = f"query group_by({', '.join(self.keys)}).agg({text}) over " + " ⋈ ".join(
            t.label for t in relation.tables.values()
        )
        return plan_query(node, relation.tables, self.keys, description)


def plan_query(
    node: ir.Node, tables: Mapping[str, Table], keys: Sequence[str], description: str
) -> Query:
    """The ``query`` job for a checked plan over named tables: group keys decoded as the
    table holding each was coded, the result in key order."""
    from tally.client.table import Query

    decode: dict[str, dict[str, Any]] = {}
    for key in keys:
        owner = next(t for t in tables.values() if key in t.columns)
        if owner.columns[key]["kind"] == "key":
            decode.update(owner.decoders([key]))
    return Query(
        next(iter(tables.values())),
        "query",
        {"plan": json.loads(ir.to_json(node))},
        description,
        decode=decode,
        post={"sort_by": list(keys)},
        inputs={name: [d.id for d in t.datasets] for name, t in tables.items()},
    )


def schemas_of(tables: Mapping[str, Table]) -> dict[str, dict[str, ColumnSpec]]:
    """Each table's public column specs, by table name."""
    return {name: _specs(table) for name, table in tables.items()}


def _specs(table: Table) -> dict[str, ColumnSpec]:
    return {
        name: ColumnSpec(column["kind"], int(column["bits"]), int(column["frac_bits"]))
        for name, column in table.columns.items()
    }


def _columns(node: ir.Expr) -> set[str]:
    if isinstance(node, ir.Col):
        return {node.name}
    if isinstance(node, ir.Binary):
        return _columns(node.left) | _columns(node.right)
    if isinstance(node, ir.Not | ir.Between | ir.IsIn):
        return _columns(node.operand)
    return set()
