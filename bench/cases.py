"""Benchmark cases: input generation, the MPC computation, the plain baseline, the check."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from tally.mpc.arithmetic import multiply
from tally.mpc.compare import equal, less_than_zero
from tally.mpc.party import Party
from tally.mpc.ring import decode_int, encode_int, reconstruct, split
from tally.mpc.shuffle import shuffle_columns

LIMIT = 1 << 40


@dataclass
class Case:
    rows: int
    groups: int = 100
    partitions: int = 1
    key_bits: int = 0
    padding: str = "max_groups"
    """``max_groups`` or ``domain`` (group-by only); ``--dp`` implies ``domain``."""
    dp: bool = False
    """Group-by under dp (epsilon 1, delta 1e-6, values clipped to [0, 1000])."""
    sort: str = "auto"
    """Sort only: ``radix``, ``quick`` or ``auto`` (the engine's planned choice)."""

    def make_input(self, rng: np.random.Generator) -> Any:
        return rng.integers(-LIMIT, LIMIT, size=(2, self.rows))

    def share(self, plain: Any, parties: int, rng: np.random.Generator) -> list[Any]:
        encoded = encode_int(plain)
        return split(encoded, parties, rng)

    def share_partitions(self, plain: Any, parties: int, rng: np.random.Generator) -> list[Any]:
        """One list of per-party inputs per partition (a single partition by default)."""
        if self.partitions != 1:
            raise SystemExit(f"{type(self).__name__.lower()} does not support --partitions")
        return [self.share(plain, parties, rng)]

    def check_partitions(self, outputs: list[list[Any]], expected: Any, plain: Any) -> bool:
        return self.check(outputs[0], expected, plain)

    def run(self, party: Party, shares: Any) -> Any:
        raise NotImplementedError

    def baseline(self, plain: Any) -> Any:
        raise NotImplementedError

    def check(self, outputs: list[Any], expected: Any, plain: Any) -> bool:
        return bool(np.array_equal(decode_int(reconstruct(outputs)), expected))


class Mul(Case):
    def run(self, party: Party, shares: Any) -> Any:
        return multiply(party, [(shares[0], shares[1])])[0]

    def baseline(self, plain: Any) -> Any:
        return plain[0] * plain[1]


class Ltz(Case):
    def run(self, party: Party, shares: Any) -> Any:
        return less_than_zero(party, shares[0] - shares[1])

    def baseline(self, plain: Any) -> Any:
        return (plain[0] < plain[1]).astype(np.int64)


class Eq(Case):
    def make_input(self, rng: np.random.Generator) -> Any:
        plain = super().make_input(rng)
        same = rng.random(self.rows) < 0.5
        plain[1, same] = plain[0, same]
        return plain

    def run(self, party: Party, shares: Any) -> Any:
        return equal(party, shares[0], shares[1])

    def baseline(self, plain: Any) -> Any:
        return (plain[0] == plain[1]).astype(np.int64)


class Shuffle(Case):
    COLUMNS = 4

    def make_input(self, rng: np.random.Generator) -> Any:
        return rng.integers(-LIMIT, LIMIT, size=(self.rows, self.COLUMNS))

    def run(self, party: Party, shares: Any) -> Any:
        return shuffle_columns(party, shares)

    def baseline(self, plain: Any) -> Any:
        return plain[np.random.default_rng(0).permutation(self.rows)]

    def check(self, outputs: list[Any], expected: Any, plain: Any) -> bool:
        got = decode_int(reconstruct(outputs))
        order_got = np.lexsort(got.T[::-1])
        order_plain = np.lexsort(plain.T[::-1])
        same_rows = np.array_equal(got[order_got], plain[order_plain])
        moved = self.rows < 10 or not np.array_equal(got, plain)
        return bool(same_rows and moved)


CASES: dict[str, type[Case]] = {"mul": Mul, "ltz": Ltz, "eq": Eq, "shuffle": Shuffle}


def _key_bits(case: Case) -> int:
    return case.key_bits or max(1, int(np.ceil(np.log2(max(case.groups, 2)))))


class Sort(Case):
    """Sort a table (key, value) by its key; keys of ``--key-bits`` bits (default 32)."""

    def make_input(self, rng: np.random.Generator) -> Any:
        bits = self.key_bits or 32
        keys = rng.integers(0, 1 << bits, self.rows)
        values = rng.integers(-LIMIT, LIMIT, self.rows)
        return {"key": keys, "value": values}

    def _specs(self) -> dict[str, Any]:
        from tally.mpc.table import ColumnSpec

        return {"key": ColumnSpec("key", bits=self.key_bits or 32), "value": ColumnSpec("int")}

    def share(self, plain: Any, parties: int, rng: np.random.Generator) -> list[Any]:
        from tally.mpc.table import share_table

        return share_table(plain, self._specs(), parties, rng=rng)

    def run(self, party: Party, shares: Any) -> Any:
        from tally.mpc.table import table_from_share_set

        method = None if self.sort == "auto" else self.sort
        table = table_from_share_set(party, shares, self._specs()).sort_by("key", method=method)
        return np.stack([table["key"].shares, table["value"].shares])

    def baseline(self, plain: Any) -> Any:
        order = np.argsort(plain["key"], kind="stable")
        return np.stack([plain["key"][order], plain["value"][order]])


class GroupBy(Case):
    """group_by(key).agg(total=sum, n=count) with ``--groups`` distinct keys."""

    def make_input(self, rng: np.random.Generator) -> Any:
        keys = rng.integers(0, self.groups, self.rows)
        values = rng.integers(0, 1000, self.rows)
        return {"key": keys, "value": values}

    def _specs(self) -> dict[str, Any]:
        from tally.mpc.table import ColumnSpec

        return {"key": ColumnSpec("key", bits=_key_bits(self)), "value": ColumnSpec("int")}

    def share(self, plain: Any, parties: int, rng: np.random.Generator) -> list[Any]:
        from tally.mpc.table import share_table

        return share_table(plain, self._specs(), parties, rng=rng)

    def run(self, party: Party, shares: Any) -> Any:
        from tally.mpc.table import table_from_share_set

        table = table_from_share_set(party, shares, self._specs())
        if self.dp or self.padding == "domain":
            grouped = table.group_by("key", domain=list(range(self.groups)))
        else:
            grouped = table.group_by("key", max_groups=self.groups)
        out = grouped.agg(dp=self._dp(), total=("value", "sum"), n=("value", "count"))
        return np.stack([out["key"].shares, out["total"].shares, out["n"].shares, out.valid.shares])

    def _dp(self) -> Any:
        from tally.mpc.dp import DP

        return DP(1.0, 1e-6, clip={"value": (0.0, 1000.0)}) if self.dp else None

    def baseline(self, plain: Any) -> Any:
        import pandas as pd

        frame = pd.DataFrame(plain)
        return frame.groupby("key").agg(total=("value", "sum"), n=("value", "count")).reset_index()

    def share_partitions(self, plain: Any, parties: int, rng: np.random.Generator) -> list[Any]:
        from tally.mpc.partition import split_partitions
        from tally.mpc.table import share_table

        if self.partitions == 1:
            return [self.share(plain, parties, rng)]
        parts = split_partitions(plain, ["key"], self.partitions, b"bench-consortium-key-2026")
        return [
            share_table(columns, self._specs(), parties, valid=valid, rng=rng)
            for columns, valid in parts
        ]

    def check_partitions(self, outputs: list[list[Any]], expected: Any, plain: Any) -> bool:
        joined = np.hstack([reconstruct(part) for part in outputs])
        order = np.argsort(joined[0], kind="stable")
        return self.check([joined[:, order]], expected, plain)

    def check(self, outputs: list[Any], expected: Any, plain: Any) -> bool:
        got = decode_int(reconstruct(outputs))
        if self.dp:  # every domain key, each value within the noise's support
            dp = self._dp()
            exact = expected.set_index("key").reindex(range(self.groups), fill_value=0)
            reach = {"total": 1024 * (dp.trials // 2 + 1), "n": dp.trials // 2 + 1}
            return bool(
                np.array_equal(got[0], np.arange(self.groups))
                and np.all(got[3] == 1)
                and np.all(np.abs(got[1] - exact["total"].to_numpy()) <= reach["total"])
                and np.all(np.abs(got[2] - exact["n"].to_numpy()) <= reach["n"])
                and np.all(got[1] % 1024 == 0)
            )
        keep = got[3] == 1
        return bool(
            np.array_equal(got[0][keep], expected["key"].to_numpy())
            and np.array_equal(got[1][keep], expected["total"].to_numpy())
            and np.array_equal(got[2][keep], expected["n"].to_numpy())
        )


class Bound(Case):
    """Contribution bounding: at most 5 rows per privacy unit (``--groups`` units)."""

    def make_input(self, rng: np.random.Generator) -> Any:
        return {
            "unit": rng.integers(0, self.groups, self.rows),
            "value": rng.integers(0, 9, self.rows),
        }

    def _specs(self) -> dict[str, Any]:
        from tally.mpc.table import ColumnSpec

        return {"unit": ColumnSpec("key", bits=_key_bits(self)), "value": ColumnSpec("int")}

    def share(self, plain: Any, parties: int, rng: np.random.Generator) -> list[Any]:
        from tally.mpc.table import share_table

        return share_table(plain, self._specs(), parties, rng=rng)

    def run(self, party: Party, shares: Any) -> Any:
        from tally.mpc.groupby import bound_contributions
        from tally.mpc.table import table_from_share_set

        table = bound_contributions(table_from_share_set(party, shares, self._specs()), "unit", 5)
        return np.stack([table["unit"].shares, table.valid.shares])

    def baseline(self, plain: Any) -> Any:
        import pandas as pd

        frame = pd.DataFrame(plain).sort_values("unit", kind="stable")
        return frame.groupby("unit").head(5).groupby("unit").size()

    def check(self, outputs: list[Any], expected: Any, plain: Any) -> bool:
        import pandas as pd

        got = decode_int(reconstruct(outputs))
        kept = pd.Series(got[0][got[1] == 1]).value_counts().sort_index()
        return bool(np.array_equal(kept.to_numpy(), expected.to_numpy()))


CASES.update({"sort": Sort, "groupby": GroupBy, "bound": Bound})


class JoinGroupBy(Case):
    """Publisher (user, campaign) ⋈ advertiser (user unique, amount), sum per campaign.

    ``--rows`` rows on each side; ``--groups`` campaigns; about half the publisher rows
    match an advertiser row.  Runs :func:`tally.mpc.relational.join_group_by` with the
    campaigns as a public domain.
    """

    def _bits(self) -> int:
        return max(1, int(np.ceil(np.log2(max(2 * self.rows, 2)))))

    def make_input(self, rng: np.random.Generator) -> Any:
        users = rng.permutation(2 * self.rows)[: self.rows]
        return {
            "advertiser": {"user": users, "amount": rng.integers(0, 1000, self.rows)},
            "publisher": {
                "user": rng.integers(0, 2 * self.rows, self.rows),
                "campaign": rng.integers(0, self.groups, self.rows),
            },
        }

    def _specs(self) -> tuple[dict[str, Any], dict[str, Any]]:
        from tally.mpc.table import ColumnSpec

        user = ColumnSpec("key", bits=self._bits())
        return (
            {"user": user, "amount": ColumnSpec("int")},
            {"user": user, "campaign": ColumnSpec("key", bits=_key_bits(self))},
        )

    def share(self, plain: Any, parties: int, rng: np.random.Generator) -> list[Any]:
        from tally.mpc.table import share_table

        left, right = self._specs()
        ads = share_table(plain["advertiser"], left, parties, rng=rng)
        pubs = share_table(plain["publisher"], right, parties, rng=rng)
        return [(a, p) for a, p in zip(ads, pubs, strict=True)]

    def run(self, party: Party, shares: Any) -> Any:
        from tally.mpc.relational import join_group_by
        from tally.mpc.table import table_from_share_set

        left, right = self._specs()
        out = join_group_by(
            table_from_share_set(party, shares[0], left),
            table_from_share_set(party, shares[1], right),
            "user",
            "campaign",
            {"total": ("amount", "sum"), "n": ("amount", "count")},
            domain=list(range(self.groups)),
        )
        return np.stack(
            [out["campaign"].shares, out["total"].shares, out["n"].shares, out.valid.shares]
        )

    def baseline(self, plain: Any) -> Any:
        import pandas as pd

        merged = pd.DataFrame(plain["publisher"]).merge(
            pd.DataFrame(plain["advertiser"]), on="user", how="inner"
        )
        return (
            merged.groupby("campaign")
            .agg(total=("amount", "sum"), n=("amount", "count"))
            .reindex(range(self.groups), fill_value=0)
            .reset_index()
        )

    def check(self, outputs: list[Any], expected: Any, plain: Any) -> bool:
        got = decode_int(reconstruct(outputs))
        order = np.argsort(got[0], kind="stable")
        got = got[:, order]
        return bool(
            np.array_equal(got[0], expected["campaign"].to_numpy())
            and np.array_equal(got[1], expected["total"].to_numpy())
            and np.array_equal(got[2], expected["n"].to_numpy())
        )


CASES["join-groupby"] = JoinGroupBy


class FilterRows(Case):
    """Two predicates over a table: ``age >= 18 & country isin {1, 4, 7}`` (``filter_rows``).

    Columns ``age`` (int, 0..99) and ``country`` (key, 0..9); the output is the table's
    ``valid`` column after the filter, compared with pandas' mask.  The must-show compares
    it with ``ltz --rows`` the same (one comparison per row).
    """

    COUNTRIES = (1, 4, 7)

    def _specs(self) -> dict[str, Any]:
        from tally.mpc.table import ColumnSpec

        return {"age": ColumnSpec("int"), "country": ColumnSpec("key", bits=4)}

    def make_input(self, rng: np.random.Generator) -> Any:
        return {"age": rng.integers(0, 100, self.rows), "country": rng.integers(0, 10, self.rows)}

    def share(self, plain: Any, parties: int, rng: np.random.Generator) -> list[Any]:
        from tally.mpc.table import share_table

        return share_table(plain, self._specs(), parties, rng=rng)

    def run(self, party: Party, shares: Any) -> Any:
        from tally.mpc.relational.filters import both, filter_rows, isin
        from tally.mpc.table import table_from_share_set

        table = table_from_share_set(party, shares, self._specs())
        predicate = both(table["age"] >= 18, isin(table["country"], self.COUNTRIES))
        return filter_rows(table, predicate).valid.shares

    def baseline(self, plain: Any) -> Any:
        import pandas as pd

        frame = pd.DataFrame(plain)
        mask = (frame["age"] >= 18) & frame["country"].isin(self.COUNTRIES)
        return mask.to_numpy().astype(np.int64)


CASES["filter"] = FilterRows
