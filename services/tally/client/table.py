"""Table handles and queries: ``cluster.table(name).group_by(...).agg(...)`` → a job.

A :class:`Table` names one or more committed datasets of one schema (their rows
are concatenated at every party).  ``group_by``, ``sort_by``, ``sum`` and ``count``
build a :class:`Query`, a built-in program with its parameters, checked here
(columns, functions, key domains) before anything is submitted.  ``run()`` submits
it to every party and returns a :class:`~tally.client.jobs.Job`; ``to_pandas()``
runs, waits and returns the reconstructed DataFrame.

Group-by domains are given in key *values* (region names, product ids); they are
coded the way the datasets' key columns were coded at upload (recorded in the
``tally.keys`` tag): positions in a public domain, a keyed hash, or the integers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from tally.client.errors import InputError, UnknownColumnError
from tally.client.keys import KeyCodec, KeyCoding, domain_digest, parse_key_tag
from tally.client.upload import KEYS_TAG, PARTITION_TAG

if TYPE_CHECKING:
    from tally.client.cluster import Cluster, Dataset
    from tally.client.jobs import Job
    from tally.client.relation import Expression, Relation

FUNCTIONS = ("sum", "count", "mean", "min", "max", "var", "std", "count_distinct")


@dataclass
class Query:
    """A program over a table, ready to run."""

    table: Table
    program: str
    params: dict[str, Any]
    description: str
    decode: dict[str, dict[str, Any]] = field(default_factory=dict)
    dp: dict[str, float] | None = None
    post: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, list[str]] | None = None
    """Dataset ids per input name (a query over several tables); None: ``table``'s."""

    def run(self) -> Job:
        """Submit to every party; returns the :class:`Job` (it runs in the background)."""
        return self.table.cluster.submit(self)

    def to_pandas(self, timeout: float | None = None) -> pd.DataFrame:
        """Run, wait, and return the result as a DataFrame (key columns decoded)."""
        return self.run().result(timeout)

    def sort_by(self, by: str | Sequence[str], descending: bool = False) -> Query:
        """Order the opened result by columns (done by this client, after opening)."""
        names = [by] if isinstance(by, str) else list(by)
        return Query(
            self.table,
            self.program,
            self.params,
            self.description,
            self.decode,
            self.dp,
            {"sort_by": names, "descending": descending},
            self.inputs,
        )


@dataclass
class GroupBy:
    """``table.group_by(keys, domain=..., max_groups=...)``; :meth:`agg` makes the query."""

    table: Table
    keys: list[str]
    domain: list[Any] | None
    max_groups: int | None
    min_group_size: int | None = None

    def agg(self, dp: Mapping[str, Any] | None = None, **aggregations: tuple[str, str]) -> Query:
        """``agg(total=("views", "sum"), n=("views", "count"), avg=("views", "mean"))``.

        ``dp={"epsilon": 1.0, "delta": 1e-6, "clip": {"views": [0, 1000]}}`` clips every
        summed column inside MPC and adds binomial noise to each aggregate before it is
        opened; it needs a public ``domain`` (docs/privacy.md).
        """
        if not aggregations:
            raise InputError('agg() needs at least one aggregation, e.g. n=("views", "count")')
        table = self.table
        named: dict[str, list[str]] = {}
        for name, pair in aggregations.items():
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
                raise InputError(
                    f'aggregation {name!r}: give (column, function), e.g. ("views", "sum")'
                )
            column, function = str(pair[0]), str(pair[1])
            if function not in FUNCTIONS:
                raise InputError(
                    f"aggregation {name!r}: unknown function {function!r}; use one of {FUNCTIONS}"
                )
            table.check_column(column)
            if name in self.keys:
                raise InputError(f"aggregation {name!r} has the name of a group key")
            named[name] = [column, function]
        params: dict[str, Any] = {"keys": self.keys, "aggregations": named}
        if self.domain is not None:
            params["domain"] = table.code_domain(self.keys, self.domain)
        if self.max_groups is not None:
            params["max_groups"] = self.max_groups
        if self.min_group_size is not None:
            params["min_group_size"] = self.min_group_size
        text = ", ".join(f"{n}={c}:{f}" for n, (c, f) in named.items())
        return Query(
            table,
            "groupby",
            params,
            f"group_by({', '.join(self.keys)}).agg({text}) over {table.label}",
            decode=table.decoders(self.keys, self.domain),
            dp=dict(dp) if dp else None,
            post={"sort_by": list(self.keys)},  # like pandas: groups in key order
        )


class Table:
    """One or more committed datasets of one schema, named by the user."""

    def __init__(self, cluster: Cluster, datasets: Sequence[Dataset]) -> None:
        self.cluster = cluster
        self.datasets = list(datasets)
        first = self.datasets[0]
        self.columns = {c["name"]: c for c in first.columns if c["name"] != "valid"}
        for other in self.datasets[1:]:
            if other.columns != first.columns:
                raise InputError(
                    f"datasets {first.name!r} and {other.name!r} differ in schema; upload them "
                    "with the same columns, types and key domains to combine them"
                )
        self.partitions = first.partitions
        if any(d.partitions != self.partitions for d in self.datasets):
            raise InputError("datasets combined in one table must have the same partitions")
        self.codings = self._codings()
        self.partition_by = [k for k in first.tags.get(PARTITION_TAG, "").split(",") if k]

    @property
    def label(self) -> str:
        """The table's datasets by name."""
        return " + ".join(d.name for d in self.datasets)

    def __repr__(self) -> str:
        kinds = ", ".join(f"{n}: {c['kind']}" for n, c in self.columns.items())
        return f"Table({self.label!r}, rows={sum(d.rows for d in self.datasets)}, {kinds})"

    def _codings(self) -> dict[str, KeyCoding]:
        codings: dict[str, KeyCoding] = {}
        for dataset in self.datasets:
            found = parse_key_tag(dataset.tags.get(KEYS_TAG, ""))
            for name, column in self.columns.items():
                if column["kind"] != "key":
                    continue
                coding = found.get(name, KeyCoding("int", int(column["bits"])))
                previous = codings.setdefault(name, coding)
                if previous != coding:
                    raise InputError(
                        f"key column {name!r} was coded differently by the datasets "
                        f"({previous.tag()} and {coding.tag()}); upload them with the same "
                        "domains=… (or all with the consortium key)"
                    )
        return codings

    def check_column(self, name: str) -> None:
        """An :class:`UnknownColumnError` naming the columns, if ``name`` is not one."""
        if name not in self.columns:
            raise UnknownColumnError(
                f"unknown column {name!r}; {self.label} has columns {sorted(self.columns)}"
            )

    def _key(self, name: str) -> KeyCoding:
        self.check_column(name)
        coding = self.codings.get(name)
        if coding is None:
            raise InputError(
                f"column {name!r} is not a key column; group by key columns "
                f"({sorted(self.codings) or 'none: upload with keys=[...]'})"
            )
        return coding

    def _domain_codec(self, name: str, coding: KeyCoding, values: Sequence[Any]) -> KeyCodec:
        known = self.cluster.dictionary.domain(coding.digest)
        if known is None and domain_digest(values) == coding.digest:
            known = list(values)
        if known is None:
            raise InputError(
                f"key column {name!r} was coded with a public domain this client does not know; "
                "pass group_by(..., domain=[...]) with the same list the providers uploaded with"
            )
        return KeyCodec.for_domain(known)

    def code_domain(self, keys: Sequence[str], domain: Sequence[Any]) -> list[Any]:
        """Group-by domain values as the codes the datasets hold."""
        rows = [tuple(v) if isinstance(v, (tuple, list)) else (v,) for v in domain]
        if any(len(r) != len(keys) for r in rows):
            raise InputError(f"every domain entry needs {len(keys)} value(s), one per key")
        coded_columns = []
        for position, name in enumerate(keys):
            coding = self._key(name)
            values = [r[position] for r in rows]
            if coding.kind == "int":
                try:
                    coded = [int(v) for v in values]
                except (TypeError, ValueError):
                    raise InputError(f"domain of integer key {name!r} must hold integers") from None
            elif coding.kind == "domain":
                coded = self._domain_codec(name, coding, values).encode(values, name).tolist()
            else:
                codec = self._hash_codec(coding)
                coded = codec.encode([str(v) for v in values], name).tolist()
                self.cluster.dictionary.remember(codec.seen, codec.bits)
            coded_columns.append(coded)
        out = [list(t) for t in zip(*coded_columns, strict=True)]
        return [r[0] for r in out] if len(keys) == 1 else out

    def _hash_codec(self, coding: KeyCoding) -> KeyCodec:
        key = self.cluster.config.key_hash_secret
        if key is None:
            raise InputError("hashed key columns need the consortium key (key_hash_secret)")
        return KeyCodec.hashed(key, coding.bits)

    def decoders(
        self, keys: Sequence[str], domain: Sequence[Any] | None = None
    ) -> dict[str, dict[str, Any]]:
        """How to decode each key column of the output (stored with the job)."""
        out: dict[str, dict[str, Any]] = {}
        for name in keys:
            coding = self._key(name)
            if coding.kind == "domain":
                values = self.cluster.dictionary.domain(coding.digest)
                if values is None and domain is not None and len(keys) == 1:
                    values = list(domain) if domain_digest(domain) == coding.digest else None
                out[name] = {"kind": "domain", "values": values}
            elif coding.kind == "hash":
                out[name] = {"kind": "hash", "bits": coding.bits}
        return out

    def group_by(
        self,
        keys: str | Sequence[str],
        domain: Sequence[Any] | None = None,
        max_groups: int | None = None,
        min_group_size: int | None = None,
    ) -> GroupBy:
        """Group by key columns; ``domain`` (all possible key values) or ``max_groups`` pads
        the output to a fixed shape so that it reveals nothing about which keys occur;
        groups with fewer than ``min_group_size`` rows are suppressed inside MPC."""
        names = [keys] if isinstance(keys, str) else list(keys)
        if not names:
            raise InputError("group_by needs at least one key column")
        for name in names:
            self._key(name)
        if domain is not None and max_groups is not None:
            raise InputError("give either domain or max_groups, not both")
        if max_groups is not None and (not isinstance(max_groups, int) or max_groups < 1):
            raise InputError("max_groups must be a positive integer")
        if self.partitions > 1 and not set(self.partition_by) <= set(names):
            raise InputError(
                f"{self.label} is partitioned by {self.partition_by}: group by those keys "
                "(each group must lie in one partition)"
            )
        if min_group_size is not None and (
            not isinstance(min_group_size, int) or min_group_size < 1
        ):
            raise InputError("min_group_size must be a positive integer")
        return GroupBy(
            self, names, list(domain) if domain is not None else None, max_groups, min_group_size
        )

    def sort_by(self, keys: str | Sequence[str], descending: bool = False) -> Query:
        """The whole table sorted by columns, opened to you (reveals every row)."""
        names = [keys] if isinstance(keys, str) else list(keys)
        for name in names:
            self.check_column(name)
        return Query(
            self,
            "sort",
            {"keys": names, "descending": descending},
            f"sort_by({', '.join(names)}) over {self.label}",
            decode=self.decoders(list(self.codings)),
        )

    def join(self, other: Table | Relation, on: str) -> Relation:
        """Inner PK–FK join (``other``'s key unique): a relational query
        (:mod:`tally.client.relation`)."""
        from tally.client.relation import Relation

        return Relation.of(self).join(other, on)

    def filter(self, predicate: Expression) -> Relation:
        """Rows where ``predicate`` holds, e.g. ``tally.col("age") >= 18``."""
        from tally.client.relation import Relation

        return Relation.of(self).filter(predicate)

    def with_columns(self, **columns: Expression) -> Relation:
        """Computed columns, e.g. ``revenue=tally.col("price") * tally.col("qty")``."""
        from tally.client.relation import Relation

        return Relation.of(self).with_columns(**columns)

    def sum(self, column: str) -> Query:
        """The sum of a column over all rows."""
        self.check_column(column)
        return Query(self, "sum", {"column": column}, f"sum({column}) over {self.label}")

    def count(self) -> Query:
        """The number of rows."""
        return Query(self, "count", {}, f"count() over {self.label}")
