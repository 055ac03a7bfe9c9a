"""Secret columns: the values analysts and programs compute with.

:class:`SecretColumn` holds this party's additive shares of a whole column
(integers, or fixed-point with ``frac_bits`` fractional bits) and supports
``+ - *`` with public and secret operands and the comparisons
``< <= > >= == !=``, which return secret 0/1 columns.  :class:`BitColumn`
holds XOR shares of bit-sliced planes.  Neither can be used as a Python
bool: control flow on a secret would leak it, so ``bool()`` raises.

Mixing an integer column with a fixed-point one scales the integers by
2^frac_bits locally; the shares give no way to check their range, so the
integers must stay below 2^(62 - frac_bits) in magnitude (2^46 with the
default 16 bits), which :class:`~tally.mpc.table.ColumnSpec` can declare with
``bits``.  Public operands are range-checked.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tally.mpc import bits, compare
from tally.mpc.arithmetic import add_public, multiply, open_values, public_to_shares
from tally.mpc.boolean import and_words, open_bits, xor_public
from tally.mpc.party import Party
from tally.mpc.ring import (
    EncodingError,
    Shares,
    decode_fixed,
    decode_int,
    encode_fixed,
    encode_int,
)


class SecretColumn:
    """One party's additive shares of a column of integers or fixed-point numbers."""

    __array_priority__ = 1000  # numpy defers to our operators

    def __init__(self, party: Party, shares: Shares, frac_bits: int = 0) -> None:
        self.party = party
        self.shares = np.asarray(shares, dtype=np.uint64)
        self.frac_bits = frac_bits

    def __repr__(self) -> str:
        kind = f"fixed({self.frac_bits})" if self.frac_bits else "int"
        return f"SecretColumn(party={self.party.id}, rows={len(self)}, kind={kind})"

    def __len__(self) -> int:
        return int(self.shares.shape[0])

    def __bool__(self) -> bool:
        raise TypeError(
            "a secret column has no truth value: branching on it would reveal it; "
            "use comparisons that return secret bits and arithmetic selection instead"
        )

    # -- construction -------------------------------------------------------------------
    @classmethod
    def public(cls, party: Party, values: Any, frac_bits: int = 0) -> SecretColumn:
        """Trivial shares of public values (party 0 holds them)."""
        encoded = encode_fixed(values, frac_bits) if frac_bits else encode_int(values)
        return cls(party, public_to_shares(party, encoded), frac_bits)

    # -- scaling helpers ----------------------------------------------------------------
    def _encode_public(self, value: Any) -> tuple[Shares, int]:
        array = np.asarray(value)
        if array.dtype.kind == "f" and not np.all(array == np.round(array)):
            frac = max(self.frac_bits, 16)
            return np.atleast_1d(encode_fixed(array, frac)), frac
        encoded = encode_int(array)
        limit = 1 << (62 - self.frac_bits)
        signed = encoded.view(np.int64)
        if self.frac_bits and signed.size and (signed.max() >= limit or signed.min() <= -limit):
            raise EncodingError(
                f"public value outside (-2^{62 - self.frac_bits}, 2^{62 - self.frac_bits}) "
                f"for a column with {self.frac_bits} fractional bits"
            )
        return np.atleast_1d(encoded) << np.uint64(self.frac_bits), self.frac_bits

    def _aligned(self, other: SecretColumn) -> tuple[Shares, Shares, int]:
        frac = max(self.frac_bits, other.frac_bits)
        left = self.shares << np.uint64(frac - self.frac_bits)
        right = other.shares << np.uint64(frac - other.frac_bits)
        return left, right, frac

    def rescaled(self, frac_bits: int) -> SecretColumn:
        """The same values with more fractional bits (exact, local)."""
        if frac_bits < self.frac_bits:
            raise ValueError("reducing fractional bits needs truncation, which this engine avoids")
        shift = np.uint64(frac_bits - self.frac_bits)
        return SecretColumn(self.party, self.shares << shift, frac_bits)

    # -- arithmetic ---------------------------------------------------------------------
    def __add__(self, other: Any) -> SecretColumn:
        if isinstance(other, SecretColumn):
            left, right, frac = self._aligned(other)
            return SecretColumn(self.party, left + right, frac)
        encoded, frac = self._encode_public(other)
        mine = self.rescaled(frac).shares
        return SecretColumn(self.party, add_public(self.party, mine, encoded), frac)

    __radd__ = __add__

    def __neg__(self) -> SecretColumn:
        return SecretColumn(self.party, np.uint64(0) - self.shares, self.frac_bits)

    def __sub__(self, other: Any) -> SecretColumn:
        if isinstance(other, SecretColumn):
            return self + (-other)
        return self + (-np.asarray(other))

    def __rsub__(self, other: Any) -> SecretColumn:
        return (-self).__add__(other)

    def __mul__(self, other: Any) -> SecretColumn:
        if isinstance(other, SecretColumn):
            if self.frac_bits and other.frac_bits:
                raise TypeError(
                    "fixed-point times fixed-point needs truncation; multiply a fixed-point "
                    "column by an integer column, or open sum and count and divide outside MPC"
                )
            (product,) = multiply(self.party, [(self.shares, other.shares)])
            return SecretColumn(self.party, product, self.frac_bits + other.frac_bits)
        array = np.asarray(other)
        if array.dtype.kind == "f" and not np.all(array == np.round(array)):
            raise TypeError("multiply by integers only; scale fractional constants yourself")
        return SecretColumn(self.party, self.shares * encode_int(array), self.frac_bits)

    __rmul__ = __mul__

    # -- comparisons --------------------------------------------------------------------
    def _difference(self, other: Any) -> Shares:
        if isinstance(other, SecretColumn):
            left, right, _ = self._aligned(other)
            return left - right
        encoded, frac = self._encode_public(other)
        return add_public(self.party, self.rescaled(frac).shares, np.uint64(0) - encoded)

    def _not(self, bit: SecretColumn) -> SecretColumn:
        return SecretColumn(self.party, add_public(self.party, np.uint64(0) - bit.shares, 1), 0)

    def _bit(self, shares: Shares) -> SecretColumn:
        return SecretColumn(self.party, shares, 0)

    def __lt__(self, other: Any) -> SecretColumn:
        return self._bit(compare.less_than_zero(self.party, self._difference(other)))

    def __gt__(self, other: Any) -> SecretColumn:
        difference = np.uint64(0) - self._difference(other)
        return self._bit(compare.less_than_zero(self.party, difference))

    def __le__(self, other: Any) -> SecretColumn:
        return self._not(self > other)

    def __ge__(self, other: Any) -> SecretColumn:
        return self._not(self < other)

    def __eq__(self, other: Any) -> SecretColumn:  # type: ignore[override]
        difference = self._difference(other)
        zero = np.zeros_like(difference)
        return self._bit(compare.equal(self.party, difference, zero))

    def __ne__(self, other: Any) -> SecretColumn:  # type: ignore[override]
        return self._not(self == other)

    __hash__ = None  # type: ignore[assignment]

    # -- aggregation and output ---------------------------------------------------------
    def sum(self) -> SecretColumn:
        """The column's total as a one-row secret column (local)."""
        return SecretColumn(self.party, np.array([self.shares.sum()], np.uint64), self.frac_bits)

    def open(self) -> Shares:
        """Reveal the encoded values to every party (the program must allow it)."""
        (opened,) = open_values(self.party, [self.shares])
        return opened

    def reveal(self) -> np.ndarray[Any, np.dtype[Any]]:
        """Reveal and decode: int64 for integer columns, float64 for fixed-point ones."""
        opened = self.open()
        return decode_fixed(opened, self.frac_bits) if self.frac_bits else decode_int(opened)

    def to_bits(self, width: int) -> BitColumn:
        """Bit decomposition of values in [0, 2^width) (or their low ``width`` bits)."""
        planes = compare.bit_decompose(self.party, self.shares, width)
        return BitColumn(self.party, planes, len(self))


class BitColumn:
    """XOR shares of a bit-sliced column: planes ``(bits, words)``, 64 rows per word."""

    def __init__(self, party: Party, planes: Shares, rows: int) -> None:
        planes = np.asarray(planes, dtype=np.uint64)
        self.party = party
        self.planes = planes.reshape(-1, bits.word_count(rows)) if planes.ndim == 1 else planes
        self.rows = rows

    def __repr__(self) -> str:
        return f"BitColumn(party={self.party.id}, rows={self.rows}, bits={self.planes.shape[0]})"

    def __len__(self) -> int:
        return self.rows

    def __bool__(self) -> bool:
        raise TypeError("a secret bit column has no truth value: branching on it would reveal it")

    def __xor__(self, other: BitColumn) -> BitColumn:
        return BitColumn(self.party, self.planes ^ other.planes, self.rows)

    def __and__(self, other: BitColumn) -> BitColumn:
        (product,) = and_words(self.party, [(self.planes, other.planes)])
        return BitColumn(self.party, product, self.rows)

    def __invert__(self) -> BitColumn:
        return BitColumn(self.party, xor_public(self.party, self.planes, ~np.uint64(0)), self.rows)

    def to_arithmetic(self) -> list[SecretColumn]:
        """Each bit plane as a 0/1 :class:`SecretColumn` (daBit conversion, 1 round)."""
        converted = compare.bits_to_arithmetic(self.party, self.planes, self.rows)
        return [SecretColumn(self.party, row, 0) for row in converted]

    def reveal(self) -> Shares:
        """Reveal the values: bit i of row r comes from plane i."""
        (opened,) = open_bits(self.party, [self.planes])
        return bits.from_planes(opened & bits.lane_mask(self.rows), self.rows)
