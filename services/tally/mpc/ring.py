"""The ring Z_2^64 and the encoding of integers and fixed-point numbers into it.

Shares and encoded values are ``numpy.uint64`` arrays; numpy's unsigned
arithmetic wraps modulo 2^64, which is exactly the ring.  Signed integers are
two's complement.  Values that take part in comparisons must lie strictly
inside (-2^62, 2^62) so that differences of two of them never wrap.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

Shares = NDArray[np.uint64]
"""One party's additive (or XOR) shares of a column."""

BOUND = 1 << 62
"""Encoded magnitudes must stay strictly below this."""

DEFAULT_FRAC_BITS = 16

MINUS_ONE = np.uint64(0xFFFFFFFFFFFFFFFF)
"""-1 in the ring."""


class EncodingError(ValueError):
    """A value cannot be encoded into the ring (out of range, NaN, infinite)."""


def encode_int(values: Any) -> Shares:
    """Encode integers as ring elements; refuses values outside (-2^62, 2^62)."""
    array = np.asarray(values)
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)):
            raise EncodingError("integer column holds NaN or infinity")
        if np.any(array != np.round(array)):
            raise EncodingError(
                "integer column holds non-integral values; use a fixed-point column"
            )
        array = array.astype(np.float64)
        if array.size and np.max(np.abs(array)) >= float(BOUND):
            raise EncodingError("integer value outside (-2^62, 2^62)")
        array = array.astype(np.int64)
    elif array.dtype.kind in "iub":
        if array.dtype.kind == "u" and array.size and int(array.max()) >= BOUND:
            raise EncodingError("integer value outside (-2^62, 2^62)")
        array = array.astype(np.int64)
    elif array.dtype == object:
        python_ints = [_exact_int(v) for v in array.ravel()]
        if any(abs(v) >= BOUND for v in python_ints):
            raise EncodingError("integer value outside (-2^62, 2^62)")
        array = np.array(python_ints, dtype=np.int64).reshape(array.shape)
    else:
        raise EncodingError(f"cannot encode values of dtype {array.dtype} as integers")
    if array.size and (int(array.max()) >= BOUND or int(array.min()) <= -BOUND):
        raise EncodingError("integer value outside (-2^62, 2^62)")
    return array.astype(np.int64).view(np.uint64)


def encode_fixed(values: Any, frac_bits: int = DEFAULT_FRAC_BITS) -> Shares:
    """Encode reals as round(value * 2^frac_bits); refuses NaN, inf and overflow."""
    array = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(array)):
        raise EncodingError("fixed-point column holds NaN or infinity")
    scaled = np.round(array * float(1 << frac_bits))
    if scaled.size and np.max(np.abs(scaled)) >= float(BOUND):
        raise EncodingError(
            f"fixed-point value outside (-2^{62 - frac_bits}, 2^{62 - frac_bits}) "
            f"with {frac_bits} fractional bits"
        )
    return scaled.astype(np.int64).view(np.uint64)


def _exact_int(value: Any) -> int:
    """One element of an object array as an exact integer, or an EncodingError."""
    if isinstance(value, float | np.floating):
        if not np.isfinite(value):
            raise EncodingError("integer column holds NaN or infinity")
        if value != round(value):
            raise EncodingError(
                "integer column holds non-integral values; use a fixed-point column"
            )
    try:
        return int(value)
    except (TypeError, ValueError) as error:
        raise EncodingError(f"cannot encode {type(value).__name__} values as integers") from error


def decode_int(encoded: Shares) -> NDArray[np.int64]:
    """Ring elements back to signed 64-bit integers."""
    return np.asarray(encoded, dtype=np.uint64).view(np.int64)


def decode_fixed(encoded: Shares, frac_bits: int = DEFAULT_FRAC_BITS) -> NDArray[np.float64]:
    """Ring elements back to floats."""
    return decode_int(encoded).astype(np.float64) / float(1 << frac_bits)


def split(secret: Shares, parties: int, rng: np.random.Generator | None = None) -> list[Shares]:
    """Split encoded values into additive shares (OS CSPRNG unless ``rng`` is given)."""
    if parties < 1:
        raise ValueError("need at least one party")
    secret = np.asarray(secret, dtype=np.uint64)
    shares = [random_ring(secret.shape, rng) for _ in range(parties - 1)]
    last = secret.copy()
    for share in shares:
        last -= share
    shares.append(last)
    return shares


def reconstruct(shares: list[Shares]) -> Shares:
    """Sum additive shares."""
    total = np.array(shares[0], dtype=np.uint64, copy=True)
    for share in shares[1:]:
        total += share
    return total


def random_ring(shape: int | tuple[int, ...], rng: np.random.Generator | None = None) -> Shares:
    """Uniform ring elements; from the OS CSPRNG unless a seeded generator is given."""
    if rng is None:
        count = int(np.prod(shape))
        raw = np.frombuffer(_os_random_bytes(8 * count), dtype=np.uint64)
        return raw.reshape(shape).copy()
    return rng.integers(0, 2**64, size=shape, dtype=np.uint64, endpoint=False)


def _os_random_bytes(count: int) -> bytes:
    import secrets

    return secrets.token_bytes(count)


ColumnRuns = list[tuple[int, int, bool]]
"""Maximal runs of equal column kinds as (start, stop, is_xor)."""


def column_runs(kinds: str) -> ColumnRuns:
    """The runs of a kinds string: ``'a'`` additive columns, ``'x'`` XOR-shared ones."""
    runs: ColumnRuns = []
    for index, kind in enumerate(kinds):
        if runs and runs[-1][2] == (kind == "x"):
            runs[-1] = (runs[-1][0], index + 1, runs[-1][2])
        else:
            runs.append((index, index + 1, kind == "x"))
    return runs


def combine_columns(
    left: Shares,
    right: Shares,
    runs: ColumnRuns,
    *,
    subtract: bool = False,
    out: Shares | None = None,
) -> Shares:
    """left (+ or -) right in the additive columns and XOR in the XOR ones.

    ``left`` and ``right`` are ``(rows, width)``; the result goes to ``out`` (which
    may be ``left`` itself, for an in-place update) or to a new array.  With both
    kinds, one arithmetic pass covers every column and the XOR columns (computed
    first, so ``out`` may alias an input) are written over it: cheaper than one
    strided pass per run.
    """
    if out is None:
        out = np.empty_like(left)
    arithmetic = np.subtract if subtract else np.add
    if len(runs) == 1:
        operation = np.bitwise_xor if runs[0][2] else arithmetic
        operation(left, right, out=out)
        return out
    xor = [column for start, stop, is_xor in runs if is_xor for column in range(start, stop)]
    fixed = left[:, xor] ^ right[:, xor]
    arithmetic(left, right, out=out)
    out[:, xor] = fixed
    return out
