"""SQL front end: one ``SELECT … GROUP BY`` statement compiled into a relational plan.

    compile_sql("SELECT campaign, SUM(amount) AS total FROM views "
                "JOIN purchases USING (user_id) WHERE amount > 0 GROUP BY campaign")

parses with sqlglot and returns a :class:`Compiled`: the plan
(:mod:`tally.mpc.relational.plan`: ``Scan`` per table, one PK–FK ``Join``, ``Filter``,
``Derive`` for computed aggregate arguments, ``Aggregate``), the table names it reads
and the output column order.  The shape it accepts:

* ``FROM t`` or ``FROM many JOIN unique USING (key)`` / ``ON many.key = unique.key``:
  the table after ``JOIN`` is the one whose key is unique (a PK–FK join: a key held
  twice there refuses the job); inner joins only;
* ``WHERE`` with ``< <= > >= = <> !=``, ``BETWEEN``, ``IN (…)``, ``AND``, ``OR``,
  ``NOT`` over columns and numeric literals (``+ - *`` allowed inside);
* ``SELECT`` the ``GROUP BY`` columns and ``SUM``, ``COUNT``, ``AVG``, ``MIN``, ``MAX``
  (of a column or an arithmetic expression of columns), each with an optional alias;
* ``HAVING`` over the group keys and the selected aggregates (by alias or written
  out again): a ``Filter`` on the aggregated table, so a dropped group's row is kept
  with ``valid`` 0 and never opened.

Anything else is refused by name before anything runs, e.g. "window functions are not
supported", "ORDER BY is not supported: results come back in group-key order".  SQL
NULLs do not exist here: every value is present; rows a filter drops stay in the
secret table with ``valid`` 0.  The compiler sees only the query text and the tables'
public column names and kinds, never data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlglot
from sqlglot import exp

from tally.mpc.relational.plan import (
    Aggregate,
    Between,
    Binary,
    Col,
    Derive,
    Expr,
    Filter,
    IsIn,
    Join,
    Lit,
    Node,
    Not,
    Scan,
)


class SqlError(ValueError):
    """A statement this front end cannot compile; the message names what to change."""


@dataclass(frozen=True)
class Compiled:
    """A compiled statement: the plan, the tables it reads, the output columns in order."""

    plan: Node
    tables: tuple[str, ...]
    columns: tuple[str, ...]
    keys: tuple[str, ...]


_COMPARISONS: dict[type[exp.Expression], str] = {
    exp.LT: "<",
    exp.LTE: "<=",
    exp.GT: ">",
    exp.GTE: ">=",
    exp.EQ: "==",
    exp.NEQ: "!=",
}
_ARITHMETIC: dict[type[exp.Expression], str] = {exp.Add: "+", exp.Sub: "-", exp.Mul: "*"}
_AGGREGATES: dict[type[exp.Expression], str] = {
    exp.Sum: "sum",
    exp.Count: "count",
    exp.Avg: "mean",
    exp.Min: "min",
    exp.Max: "max",
    exp.Variance: "var",  # VARIANCE, VAR_SAMP: the sample variance, as pandas
    exp.Stddev: "std",
    exp.StddevSamp: "std",
}

_REFUSED: tuple[tuple[str, str], ...] = (
    ("with_", "WITH (common table expressions) is not supported"),
    ("order", "ORDER BY is not supported: results come back in group-key order"),
    ("limit", "LIMIT is not supported: every group is released"),
    ("offset", "OFFSET is not supported"),
    ("distinct", "SELECT DISTINCT is not supported: use GROUP BY"),
    ("qualify", "QUALIFY is not supported"),
)


def compile_sql(sql: str, schemas: Mapping[str, Mapping[str, str]] | None = None) -> Compiled:
    """Compile one statement; ``schemas`` (table -> column name -> kind: ``int``,
    ``fixed``, ``key``, ...), when given, checks the join key and types computed
    aggregate arguments (``fixed`` when any column in them is); the plan check at every
    party catches the rest (unknown columns, mismatched key widths)."""
    try:
        statements = sqlglot.parse(sql)
    except sqlglot.errors.ParseError as error:
        first = error.errors[0]["description"] if error.errors else str(error)
        raise SqlError(f"not valid SQL: {first}") from None
    if len(statements) != 1 or statements[0] is None:
        raise SqlError("give exactly one SELECT statement")
    statement = statements[0]
    if isinstance(statement, exp.SetOperation):
        raise SqlError(f"{statement.key.upper()} is not supported: one SELECT only")
    if not isinstance(statement, exp.Select):
        raise SqlError(f"only SELECT is supported, not {statement.key.upper()}")
    if statement.find(exp.Window):
        raise SqlError("window functions are not supported")
    for key, message in _REFUSED:
        if statement.args.get(key):
            raise SqlError(message)
    if any(isinstance(s, exp.Subquery) for s in statement.find_all(exp.Subquery)):
        raise SqlError("subqueries are not supported")
    tables, source = _source(statement, schemas)
    where = statement.args.get("where")
    if where is not None:
        source = Filter(source, _predicate(where.this))
    group = statement.args.get("group")
    if group is None or not group.expressions:
        raise SqlError(
            "a query needs GROUP BY: it releases aggregates per group (a total over every "
            "row is table.sum(column) in the SDK)"
        )
    keys = tuple(_column_name(key, "a GROUP BY item") for key in group.expressions)
    aggregations: list[tuple[str, str, str]] = []
    columns: list[str] = []
    by_text: dict[str, str] = {}
    """The SQL text of each selected aggregate -> its output column (for HAVING)."""
    derived = 0
    for item in statement.expressions:
        alias = item.alias if isinstance(item, exp.Alias) else ""
        value = item.this if isinstance(item, exp.Alias) else item
        if isinstance(value, exp.Column):
            name = _column_name(value, "a selected column")
            if name not in keys:
                raise SqlError(f"column {name!r} is selected but neither grouped nor aggregated")
            if alias and alias != name:
                raise SqlError(f"group key {name!r} cannot be renamed (AS {alias})")
            columns.append(name)
            continue
        function = _AGGREGATES.get(type(value))
        if isinstance(value, exp.VariancePop | exp.StddevPop):
            raise SqlError(
                f"{value.sql()!r}: the population variance is not supported; "
                "VARIANCE/VAR_SAMP and STDDEV/STDDEV_SAMP give the sample ones"
            )
        if function is None:
            raise SqlError(
                f"{value.sql()!r}: select group keys and SUM/COUNT/AVG/MIN/MAX/VARIANCE/STDDEV only"
            )
        argument = value.this
        if isinstance(argument, exp.Star) or (function == "count" and argument is None):
            column = keys[0]  # COUNT(*): counts valid rows; any column will do
        elif isinstance(argument, exp.Column):
            column = _column_name(argument, "an aggregated column")
        elif isinstance(argument, exp.Distinct):
            distinct = argument.expressions
            if function != "count" or len(distinct) != 1 or not isinstance(distinct[0], exp.Column):
                raise SqlError(
                    f"{value.sql()!r}: DISTINCT is supported as COUNT(DISTINCT column) only"
                )
            function = "count_distinct"
            column = _column_name(distinct[0], "a counted column")
        else:
            derived += 1
            column = f"_expr{derived}"
            expression = _arithmetic(argument)
            kinds = {k for table in (schemas or {}).values() for k in _kinds(expression, table)}
            source = Derive(source, column, expression, "fixed" if "fixed" in kinds else "int")
        name = alias or f"{function}_{column}".replace("_expr", "expr")
        if name in keys or name in columns:
            raise SqlError(f"output column {name!r} appears twice: give it another AS name")
        aggregations.append((name, column, function))
        columns.append(name)
        by_text[value.sql()] = name
    if not aggregations:
        raise SqlError(
            "select at least one aggregate (SUM, COUNT, AVG, MIN, MAX, VARIANCE, STDDEV)"
        )
    plan: Node = Aggregate(source, keys, tuple(aggregations))
    having = statement.args.get("having")
    if having is not None:
        plan = Filter(plan, _predicate(_outputs(having.this, by_text, set(columns))))
    return Compiled(plan, tables, tuple(columns), keys)


def _outputs(condition: exp.Expression, by_text: Mapping[str, str], names: set[str]) -> Any:
    """HAVING's aggregates as the output columns that hold them (selected ones only)."""

    def swap(node: exp.Expression) -> exp.Expression:
        if type(node) in _AGGREGATES:
            name = by_text.get(node.sql())
            if name is None:
                raise SqlError(f"HAVING {node.sql()}: select that aggregate too")
            return exp.column(name)
        if isinstance(node, exp.Column) and node.name not in names:
            raise SqlError(f"HAVING {node.sql()}: use a group key or a selected aggregate")
        return node

    return condition.transform(swap)


def _table_name(node: Any) -> str:
    if not isinstance(node, exp.Table) or not node.name:
        raise SqlError("FROM and JOIN name tables (datasets) only")
    if node.alias and node.alias != node.name:
        raise SqlError(f"table aliases are not supported (AS {node.alias}): use the dataset name")
    return str(node.name)


def _kinds(expression: Expr, schema: Mapping[str, str]) -> set[str]:
    if isinstance(expression, Col):
        return {schema[expression.name]} if expression.name in schema else set()
    if isinstance(expression, Binary):
        return _kinds(expression.left, schema) | _kinds(expression.right, schema)
    return set()


def _source(
    statement: exp.Select, schemas: Mapping[str, Mapping[str, str]] | None
) -> tuple[tuple[str, ...], Node]:
    origin = statement.args.get("from_") or statement.args.get("from")
    if origin is None:
        raise SqlError("a query reads FROM a dataset")
    many = _table_name(origin.this)
    joins = statement.args.get("joins") or []
    if not joins:
        return (many,), Scan(many)
    if len(joins) > 1:
        raise SqlError("one JOIN per query is supported")
    (join,) = joins
    if join.side or join.kind not in ("", "INNER"):
        raise SqlError(
            f"{(join.side or join.kind).upper()} JOIN is not supported: inner joins only"
        )
    unique = _table_name(join.this)
    using = join.args.get("using")
    if using:
        if len(using) != 1:
            raise SqlError("join on one key column (multi-key joins are not supported yet)")
        key = str(using[0].name)
    else:
        condition = join.args.get("on")
        if not isinstance(condition, exp.EQ) or not all(
            isinstance(side, exp.Column) for side in (condition.this, condition.expression)
        ):
            raise SqlError("join with USING (key) or ON a.key = b.key")
        left, right = condition.this, condition.expression
        if left.name != right.name:
            raise SqlError("join on columns of the same name on both sides (USING (key))")
        key = str(left.name)
    if schemas is not None:
        for table in (many, unique):
            if table in schemas and key not in schemas[table]:
                raise SqlError(f"table {table!r} has no column {key!r} to join on")
    return (many, unique), Join(Scan(unique), Scan(many), key)


def _column_name(node: Any, what: str) -> str:
    if not isinstance(node, exp.Column):
        raise SqlError(f"{what} must be a column, not {node.sql()!r}")
    return str(node.name)


def _literal(node: Any) -> int | float:
    if isinstance(node, exp.Neg):
        return -_literal(node.this)
    if not isinstance(node, exp.Literal) or node.is_string:
        raise SqlError(
            f"{node.sql()!r}: compare with numbers (text keys are coded at upload; use their "
            "codes or the SDK's domain)"
        )
    text = str(node.this)
    return float(text) if any(c in text for c in ".eE") else int(text)


def _arithmetic(node: Any) -> Expr:
    if isinstance(node, exp.Paren):
        return _arithmetic(node.this)
    if isinstance(node, exp.Column):
        return Col(str(node.name))
    if isinstance(node, exp.Literal | exp.Neg):
        return Lit(_literal(node))
    op = _ARITHMETIC.get(type(node))
    if op is None:
        if isinstance(node, exp.Div):
            raise SqlError(f"{node.sql()!r}: division is not supported yet")
        raise SqlError(f"{node.sql()!r} is not an arithmetic expression of columns")
    return Binary(op, _arithmetic(node.this), _arithmetic(node.expression))


def _predicate(node: Any) -> Expr:
    if isinstance(node, exp.Paren):
        return _predicate(node.this)
    if isinstance(node, exp.And):
        return Binary("&", _predicate(node.this), _predicate(node.expression))
    if isinstance(node, exp.Or):
        return Binary("|", _predicate(node.this), _predicate(node.expression))
    if isinstance(node, exp.Not):
        return Not(_predicate(node.this))
    if isinstance(node, exp.Between):
        return Between(
            _arithmetic(node.this), _literal(node.args["low"]), _literal(node.args["high"])
        )
    if isinstance(node, exp.In):
        if node.args.get("query") is not None:
            raise SqlError("subqueries are not supported")
        values = tuple(_literal(v) for v in node.expressions)
        if not values:
            raise SqlError("IN needs at least one value")
        return IsIn(_arithmetic(node.this), values)
    op = _COMPARISONS.get(type(node))
    if op is None:
        if isinstance(node, exp.Is):
            raise SqlError("IS NULL is not supported: there are no NULLs (every value is present)")
        if isinstance(node, exp.Like | exp.ILike):
            raise SqlError("LIKE is not supported: text is coded at upload")
        raise SqlError(f"{node.sql()!r} is not a comparison")
    return Binary(op, _arithmetic(node.this), _arithmetic(node.expression))
