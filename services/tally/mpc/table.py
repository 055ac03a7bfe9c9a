"""``SecretTable``: named secret columns of equal length plus a ``valid`` weight column.

Column kinds (public metadata, DESIGN §1):

* ``int``: signed integers in (-2^62, 2^62), or in [-2^(bits-1), 2^(bits-1)) when
  ``bits`` is declared (sorting on such a column then costs ``bits`` passes);
* ``fixed``: reals with ``frac_bits`` fractional bits;
* ``key``: non-negative integer codes below 2^bits (strings are mapped to codes
  by the data providers), the natural group-by keys.

``valid`` is 1 for real rows and 0 for dummy or padding rows; every aggregate
weighs rows by it.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from tally.mpc.arithmetic import public_to_shares
from tally.mpc.columns import SecretColumn
from tally.mpc.party import Party
from tally.mpc.ring import (
    DEFAULT_FRAC_BITS,
    EncodingError,
    Shares,
    decode_fixed,
    decode_int,
    encode_fixed,
    encode_int,
    split,
)

KINDS = ("int", "fixed", "key")

OVERFLOW_COLUMN = "__overflow"
"""A group-by with ``max_groups``: 1 on every output row when groups were dropped."""


class GroupsDropped(UserWarning):
    """A ``max_groups`` output holds fewer groups than the data has (told to the recipient)."""


@dataclass(frozen=True)
class ColumnSpec:
    """Public description of one column."""

    kind: str = "int"
    """``int``, ``fixed`` or ``key``."""
    bits: int = 0
    """Key width (``key``: codes below 2^bits) or declared signed width (``int``); 0 = 63."""
    frac_bits: int = 0
    """Fractional bits of a ``fixed`` column."""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown column kind {self.kind!r}; expected one of {KINDS}")
        if not 0 <= self.bits <= 63:
            raise ValueError("column bit width must be 1..63 (0 for the default)")
        if self.kind == "key" and self.bits == 0:
            object.__setattr__(self, "bits", 32)
        if self.kind == "fixed" and self.frac_bits == 0:
            object.__setattr__(self, "frac_bits", DEFAULT_FRAC_BITS)

    @property
    def sort_width(self) -> int:
        """Bits a sort on this column looks at."""
        return self.bits or 63

    @property
    def sort_offset(self) -> int:
        """Added before sorting so that values become non-negative."""
        if self.kind == "key":
            return 0
        return 1 << (self.sort_width - 1)

    def encode(self, values: Any) -> Shares:
        """Plain values to ring elements, checking the declared range."""
        if self.kind == "fixed":
            return encode_fixed(values, self.frac_bits)
        encoded = encode_int(values)
        signed = encoded.view(np.int64)
        if self.kind == "key":
            if signed.size and (signed.min() < 0 or signed.max() >= (1 << self.bits)):
                raise EncodingError(f"key codes must lie in [0, 2^{self.bits})")
        elif self.bits and signed.size:
            half = 1 << (self.bits - 1)
            if signed.min() < -half or signed.max() >= half:
                raise EncodingError(f"values must lie in [-2^{self.bits - 1}, 2^{self.bits - 1})")
        return encoded

    def decode(self, encoded: Shares) -> NDArray[Any]:
        """Ring elements back to plain values."""
        if self.kind == "fixed":
            return decode_fixed(encoded, self.frac_bits)
        return decode_int(encoded)


@dataclass
class SecretTable:
    """A party's shares of a table: columns, their specs, and the ``valid`` weights."""

    party: Party
    columns: dict[str, SecretColumn]
    specs: dict[str, ColumnSpec]
    valid: SecretColumn
    derived: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Output columns computed at reveal time, e.g. a mean from its sum and count."""
    output_names: list[str] | None = None
    """Column order of the revealed output (helpers starting with ``__`` are dropped)."""

    def __post_init__(self) -> None:
        lengths = {len(c) for c in self.columns.values()} | {len(self.valid)}
        if len(lengths) > 1:
            raise ValueError(f"columns differ in length: {sorted(lengths)}")
        missing = set(self.columns) - set(self.specs)
        if missing:
            raise ValueError(f"columns without a spec: {sorted(missing)}")

    @classmethod
    def from_shares(
        cls,
        party: Party,
        shares: Mapping[str, Shares],
        specs: Mapping[str, ColumnSpec],
        valid: Shares | None = None,
    ) -> SecretTable:
        """Wrap this party's share arrays; without ``valid`` every row is real."""
        columns = {
            name: SecretColumn(party, np.asarray(shares[name], np.uint64), specs[name].frac_bits)
            for name in specs
        }
        rows = len(next(iter(columns.values()))) if columns else 0
        if valid is None:
            valid = public_to_shares(party, np.ones(rows, dtype=np.uint64))
        return cls(party, columns, dict(specs), SecretColumn(party, valid))

    def __len__(self) -> int:
        return len(self.valid)

    def __repr__(self) -> str:
        kinds = ", ".join(f"{n}:{s.kind}" for n, s in self.specs.items())
        return f"SecretTable(party={self.party.id}, rows={len(self)}, columns=[{kinds}])"

    def __getitem__(self, name: str) -> SecretColumn:
        try:
            return self.columns[name]
        except KeyError:
            raise KeyError(
                f"unknown column {name!r}; the table has {sorted(self.columns)}"
            ) from None

    def __bool__(self) -> bool:
        raise TypeError("a secret table has no truth value")

    def spec(self, name: str) -> ColumnSpec:
        """The spec of a column, with a clear error for unknown names."""
        if name not in self.specs:
            raise KeyError(f"unknown column {name!r}; the table has {sorted(self.specs)}")
        return self.specs[name]

    def with_columns(
        self,
        columns: Mapping[str, SecretColumn],
        specs: Mapping[str, ColumnSpec],
        valid: SecretColumn | None = None,
    ) -> SecretTable:
        """A new table with the given columns (same party)."""
        return replace(
            self,
            columns=dict(columns),
            specs=dict(specs),
            valid=valid if valid is not None else self.valid,
            derived={},
        )

    def sort_by(
        self, keys: str | Sequence[str], descending: bool = False, method: str | None = None
    ) -> SecretTable:
        """Stable oblivious sort by one or several columns; see :mod:`tally.mpc.sorting`.

        ``method``: ``radix`` or ``quick``; by default chosen from the key widths and rows.
        """
        from tally.mpc.analytics import sort_table

        names = [keys] if isinstance(keys, str) else list(keys)
        return sort_table(self, names, descending, method)

    def group_by(
        self,
        keys: str | Sequence[str],
        domain: Sequence[Any] | None = None,
        max_groups: int | None = None,
        min_group_size: int | None = None,
    ) -> GroupBy:
        """Group rows by key columns; finish with :meth:`GroupBy.agg`.

        Without ``domain`` or ``max_groups`` the number of groups is revealed to
        the parties.  ``domain`` (the public list of possible key values, tuples
        for several keys) or ``max_groups=G`` pads the output to a fixed shape
        that reveals nothing about which keys occur or how many.  ``min_group_size=k``
        suppresses, inside MPC, every group with fewer than k valid rows (under dp: whose
        noisy count is below k): its values come out as zeros and its ``valid`` as 0.
        """
        names = [keys] if isinstance(keys, str) else list(keys)
        for name in names:
            self.spec(name)
        return GroupBy(self, names, domain, max_groups, min_group_size)

    def sum(self, column: str) -> SecretColumn:
        """Total of a column over valid rows (one Beaver product per row)."""
        from tally.mpc.analytics import weighted

        return weighted(self, [column])[0].sum()

    def count(self) -> SecretColumn:
        """Number of valid rows (local)."""
        return self.valid.sum()

    def reveal(self, drop_invalid: bool = True) -> dict[str, NDArray[Any]]:
        """Open every column to every party and decode it (only where the program allows).

        Columns are multiplied by ``valid`` first (one round), so a row marked invalid is
        opened as zeros: what it held never reaches a party.  The ``valid`` flags
        themselves are opened (they say which rows are output rows).
        """
        from tally.mpc.arithmetic import multiply, open_values

        names = list(self.columns)
        valid = self.valid.shares
        masked = multiply(self.party, [(self.columns[n].shares, valid) for n in names])
        opened = open_values(self.party, [*masked, valid])
        keep = opened[-1].view(np.int64) != 0 if drop_invalid else np.ones(len(self), bool)
        plain = {n: self.specs[n].decode(o)[keep] for n, o in zip(names, opened, strict=False)}
        if not drop_invalid:
            plain["valid"] = decode_int(opened[-1])
        return finish_derived(plain, self.derived, self.output_names)


def finish_derived(
    plain: dict[str, NDArray[Any]],
    derived: Mapping[str, tuple[str, ...]],
    order: Sequence[str] | None = None,
) -> dict[str, NDArray[Any]]:
    """Compute derived output columns from opened helpers and drop the helpers.

    ``("mean", sum, count)``: sum / count, NaN for an empty group;
    ``("extreme", count)``: the value, NaN for an empty group;
    ``("var" | "std", sum, sum of squares, count)``: the sample variance (ddof 1, as
    pandas) or its square root, NaN for a group of fewer than two rows.
    A set overflow flag (:data:`OVERFLOW_COLUMN`) is told as a :class:`GroupsDropped`
    warning.
    """
    flag = plain.get(OVERFLOW_COLUMN)
    if flag is not None and flag.size and bool(np.any(flag != 0)):
        warnings.warn(
            GroupsDropped(
                "the data has more groups than max_groups: some groups are missing from "
                "this output (raise max_groups)"
            ),
            stacklevel=2,
        )
    for name, (operation, *sources) in derived.items():
        count = plain[sources[-1]].astype(np.float64)
        if operation == "mean":
            total = plain[sources[0]].astype(np.float64)
            with np.errstate(divide="ignore", invalid="ignore"):
                plain[name] = np.where(count > 0, total / np.where(count > 0, count, 1), np.nan)
        elif operation == "extreme":
            plain[name] = np.where(count > 0, plain[name].astype(np.float64), np.nan)
        elif operation in ("var", "std"):
            plain[name] = _sample_variance(plain[sources[0]], plain[sources[1]], plain[sources[2]])
            if operation == "std":
                plain[name] = np.sqrt(plain[name])
    names = list(order) if order is not None else [n for n in plain if not n.startswith("__")]
    if "valid" in plain and "valid" not in names:
        names.append("valid")
    return {n: plain[n] for n in names}


def _sample_variance(total: NDArray[Any], squares: NDArray[Any], count: NDArray[Any]) -> Any:
    """(n * sum(x^2) - sum(x)^2) / (n (n - 1)) per group, in exact integers, then float."""
    out = np.full(len(count), np.nan)
    rows = zip(total.tolist(), squares.tolist(), count.tolist(), strict=True)
    for i, (s, q, n) in enumerate(rows):
        if n > 1:
            out[i] = (n * q - s * s) / (n * (n - 1))
    return out


@dataclass
class GroupBy:
    """A pending group-by; :meth:`agg` runs it."""

    table: SecretTable
    keys: list[str]
    domain: Sequence[Any] | None
    max_groups: int | None
    min_group_size: int | None = None

    def agg(self, dp: Any = None, **aggregations: tuple[str, str]) -> SecretTable:
        """``agg(total=("views", "sum"), n=("views", "count"), ...)``: see ``tally.mpc.groupby``."""
        from tally.mpc.groupby import aggregate

        return aggregate(self, aggregations, dp)


def share_table(
    data: Mapping[str, Any],
    specs: Mapping[str, ColumnSpec],
    parties: int,
    valid: Any = None,
    rng: np.random.Generator | None = None,
) -> list[dict[str, Shares]]:
    """Provider side: encode plain columns and split them into one share set per party.

    ``valid`` (0/1 per row, default all 1) travels as the column ``"valid"``.
    Shares come from the OS CSPRNG unless ``rng`` is given (tests only).
    """
    unknown = set(data) - set(specs)
    if unknown:
        raise KeyError(f"columns without a spec: {sorted(unknown)}")
    rows = {len(np.asarray(v)) for v in data.values()}
    if len(rows) > 1:
        raise ValueError("columns differ in length")
    count = rows.pop() if rows else 0
    valid_values = np.ones(count, np.int64) if valid is None else np.asarray(valid, np.int64)
    if valid_values.size and not np.isin(valid_values, (0, 1)).all():
        raise EncodingError("valid must be 0 or 1")
    encoded = {name: specs[name].encode(data[name]) for name in specs}
    encoded["valid"] = encode_int(valid_values)
    out: list[dict[str, Shares]] = [{} for _ in range(parties)]
    for name, values in encoded.items():
        for party, share in enumerate(split(values, parties, rng)):
            out[party][name] = share
    return out


def table_from_share_set(
    party: Party, share_set: Mapping[str, Shares], specs: Mapping[str, ColumnSpec]
) -> SecretTable:
    """The party-side view of one :func:`share_table` share set."""
    return SecretTable.from_shares(party, share_set, specs, share_set.get("valid"))
