"""Bit-sliced layout: 64 rows per ``uint64`` word ("lanes"), one plane per bit position.

A binary-shared column of ``rows`` values with ``k`` bits is held as ``planes``
of shape ``(k, words)`` where ``words = ceil(rows / 64)``; bit ``i`` of row
``r`` is bit ``r % 64`` of ``planes[i, r // 64]``.  One numpy operation on a
plane evaluates a gate for 64 rows.  All functions here are plain maths on
public or locally held data; XOR-sharing commutes with every one of them.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

Words = NDArray[np.uint64]

_MASKS = [
    (32, np.uint64(0x00000000FFFFFFFF)),
    (16, np.uint64(0x0000FFFF0000FFFF)),
    (8, np.uint64(0x00FF00FF00FF00FF)),
    (4, np.uint64(0x0F0F0F0F0F0F0F0F)),
    (2, np.uint64(0x3333333333333333)),
    (1, np.uint64(0x5555555555555555)),
]


def word_count(rows: int) -> int:
    """Words needed for ``rows`` lanes."""
    return (rows + 63) // 64


def transpose64(blocks: Words) -> Words:
    """Transpose each 64x64 bit matrix in ``blocks`` (shape ``(B, 64)``), in place and returned.

    Afterwards bit ``j`` of ``blocks[b, i]`` is what bit ``i`` of ``blocks[b, j]`` was.
    Six stages of masked swaps (the recursive block transpose).
    """
    for shift, mask in _MASKS:
        grouped = blocks.reshape(blocks.shape[0], 64 // (2 * shift), 2, shift)
        low, high = grouped[:, :, 0, :], grouped[:, :, 1, :]
        swap = ((low >> np.uint64(shift)) ^ high) & mask
        low ^= swap << np.uint64(shift)
        high ^= swap
    return blocks


def to_planes(values: Words, bits: int = 64) -> Words:
    """Row values (shape ``(rows,)``) to ``bits`` planes of shape ``(bits, words)``."""
    rows = values.shape[0]
    words = word_count(rows)
    blocks = np.zeros(words * 64, dtype=np.uint64)
    blocks[:rows] = values
    transposed = transpose64(blocks.reshape(words, 64))
    return np.ascontiguousarray(transposed[:, :bits].T)


def from_planes(planes: Words, rows: int) -> Words:
    """Planes (shape ``(k, words)``, k <= 64) back to row values of k bits."""
    bits, words = planes.shape
    blocks = np.zeros((words, 64), dtype=np.uint64)
    blocks[:, :bits] = planes.T
    return transpose64(blocks).reshape(-1)[:rows].copy()


def pack_lanes(row_bits: NDArray[np.generic]) -> Words:
    """A 0/1 value per row (any integer dtype) to one plane of lane-packed words."""
    packed = np.packbits(np.asarray(row_bits, dtype=np.uint8) & 1, bitorder="little")
    words = word_count(row_bits.shape[0])
    padded = np.zeros(words * 8, dtype=np.uint8)
    padded[: packed.shape[0]] = packed
    return padded.view(np.uint64)


def unpack_lanes(plane: Words, rows: int) -> NDArray[np.uint8]:
    """One plane of lane-packed words back to a 0/1 ``uint8`` per row."""
    return np.unpackbits(np.ascontiguousarray(plane).view(np.uint8), bitorder="little")[:rows]


def lane_mask(rows: int) -> Words:
    """All-ones words with the lanes beyond ``rows`` cleared."""
    mask = np.full(word_count(rows), np.uint64(0xFFFFFFFFFFFFFFFF), dtype=np.uint64)
    spare = mask.shape[0] * 64 - rows
    if spare:
        mask[-1] = np.uint64((1 << (64 - spare)) - 1)
    return mask
