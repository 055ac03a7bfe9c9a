"""Byte encodings of offline material that is not a fixed-width chunk: shuffle correlations.

A shuffle correlation for ``rows`` rows and ``width`` columns is
``rows, width, steps`` (three little-endian uint64), then per step a role
byte (0: permuter, 1: helper) followed by, for a permuter, the permutation
(``rows`` int64) and Delta (``rows * width`` uint64), for a helper the mask
and the output (``rows * width`` uint64 each), all little-endian.

Neither direction copies the arrays on a little-endian host:
:func:`encode_shuffle_parts` hands out views of them in wire order (for a
streamed reply), and :func:`decode_shuffle` returns arrays over the buffer.
"""

from __future__ import annotations

import struct

import numpy as np
from numpy.typing import NDArray

from tally.mpc.tuples import HelperShare, PermuterShare, ShuffleShare

_HEAD = struct.Struct("<QQQ")

WireParts = list[memoryview | bytes]
"""An encoding as consecutive pieces: their concatenation is the encoding."""


def encode_shuffle_parts(correlation: ShuffleShare) -> tuple[WireParts, int]:
    """One party's shuffle correlation as pieces in wire order, and their total length in bytes.

    The array pieces are views of the correlation's arrays (copies only where
    an array is not already contiguous little-endian), so the correlation
    must not be modified while the pieces are in use.
    """
    if not correlation:
        return [_HEAD.pack(0, 0, 0)], _HEAD.size
    first = correlation[0]
    shape = first.delta.shape if isinstance(first, PermuterShare) else first.mask.shape
    rows, width = int(shape[0]), int(shape[1])
    parts: WireParts = [_HEAD.pack(rows, width, len(correlation))]
    for step in correlation:
        if isinstance(step, PermuterShare):
            parts += [b"\0", _little_endian(step.permutation, "<i8"), _little_endian(step.delta)]
        else:
            parts += [b"\1", _little_endian(step.mask), _little_endian(step.output)]
    return parts, sum(len(part) for part in parts)


def encode_shuffle(correlation: ShuffleShare) -> bytes:
    """One party's shuffle correlation as bytes."""
    parts, _ = encode_shuffle_parts(correlation)
    return b"".join(parts)


def decode_shuffle(data: bytes | bytearray | memoryview) -> ShuffleShare:
    """Inverse of :func:`encode_shuffle`; raises ``ValueError`` on malformed input.

    The arrays alias ``data`` (on a little-endian host; a big-endian one
    converts them): keep ``data`` unchanged while they are in use.  Arrays
    over ``bytes`` are read-only.
    """
    buffer = memoryview(data).cast("B")
    if len(buffer) < _HEAD.size:
        raise ValueError("a shuffle correlation is at least its 24-byte header")
    rows, width, steps = _HEAD.unpack_from(buffer, 0)
    offset, out = _HEAD.size, []  # type: tuple[int, ShuffleShare]
    cells = rows * width

    def take(dtype: str, count: int) -> NDArray[np.generic]:
        nonlocal offset
        array = np.frombuffer(buffer, dtype, count, offset)
        offset += 8 * count
        return array

    for _ in range(steps):
        if offset >= len(buffer):
            raise ValueError("the shuffle correlation ends before its last step")
        role = buffer[offset]
        offset += 1
        if role == 0:
            permutation = take("<i8", rows).astype(np.int64, copy=False)
            delta = take("<u8", cells).astype(np.uint64, copy=False)
            out.append(PermuterShare(permutation, delta.reshape(rows, width)))
        elif role == 1:
            mask = take("<u8", cells).astype(np.uint64, copy=False)
            output = take("<u8", cells).astype(np.uint64, copy=False)
            out.append(HelperShare(mask.reshape(rows, width), output.reshape(rows, width)))
        else:
            raise ValueError(f"unknown shuffle step role {role}")
    if offset != len(buffer):
        raise ValueError("trailing bytes after the shuffle correlation")
    return out


def _little_endian(array: NDArray[np.generic], dtype: str = "<u8") -> memoryview:
    """The bytes of ``array`` as ``dtype``, C order: a view when it already is that."""
    return np.ascontiguousarray(array, dtype=dtype).reshape(-1).view(np.uint8).data
