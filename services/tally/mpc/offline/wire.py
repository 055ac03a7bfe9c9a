"""Byte encodings of offline material that is not a fixed-width chunk: shuffle correlations.

A shuffle correlation for ``rows`` rows and ``width`` columns is
``rows, width, steps`` (three little-endian uint64), then per step a role
byte (0: permuter, 1: helper) followed by, for a permuter, the permutation
(``rows`` int64) and Delta (``rows * width`` uint64), for a helper the mask
and the output (``rows * width`` uint64 each).
"""

from __future__ import annotations

import struct

import numpy as np

from tally.mpc.tuples import HelperShare, PermuterShare, ShuffleShare

_HEAD = struct.Struct("<QQQ")


def encode_shuffle(correlation: ShuffleShare) -> bytes:
    """One party's shuffle correlation as bytes."""
    if not correlation:
        return _HEAD.pack(0, 0, 0)
    first = correlation[0]
    shape = first.delta.shape if isinstance(first, PermuterShare) else first.mask.shape
    rows, width = int(shape[0]), int(shape[1])
    parts = [_HEAD.pack(rows, width, len(correlation))]
    for step in correlation:
        if isinstance(step, PermuterShare):
            parts += [b"\0", step.permutation.astype("<i8").tobytes(), step.delta.tobytes()]
        else:
            parts += [b"\1", step.mask.tobytes(), step.output.tobytes()]
    return b"".join(parts)


def decode_shuffle(data: bytes) -> ShuffleShare:
    """Inverse of :func:`encode_shuffle`; raises ``ValueError`` on malformed input."""
    rows, width, steps = _HEAD.unpack_from(data, 0)
    offset, out = _HEAD.size, []  # type: tuple[int, ShuffleShare]
    cells = rows * width
    for _ in range(steps):
        role = data[offset]
        offset += 1
        if role == 0:
            permutation = np.frombuffer(data, "<i8", rows, offset).astype(np.int64)
            offset += 8 * rows
            delta = np.frombuffer(data, "<u8", cells, offset).reshape(rows, width)
            offset += 8 * cells
            out.append(PermuterShare(permutation, delta.astype(np.uint64)))
        elif role == 1:
            mask = np.frombuffer(data, "<u8", cells, offset).reshape(rows, width)
            offset += 8 * cells
            output = np.frombuffer(data, "<u8", cells, offset).reshape(rows, width)
            offset += 8 * cells
            out.append(HelperShare(mask.astype(np.uint64), output.astype(np.uint64)))
        else:
            raise ValueError(f"unknown shuffle step role {role}")
    if offset != len(data):
        raise ValueError("trailing bytes after the shuffle correlation")
    return out
