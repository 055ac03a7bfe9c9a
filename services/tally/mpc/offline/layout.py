"""Tuple kinds as the tuple-service stores them, and the byte layout of their chunks.

A chunk of ``n`` tuples of one kind is stored, at each party, as the party's
shares in *sections*: section s holds ``n * width_s`` bytes, tuple t at bytes
``[t * width_s, (t + 1) * width_s)``.  Any range of tuples is therefore a
slice of every section, served without decoding.

=================  ===================================================  ============
kind               sections (per tuple)                                  bytes/tuple
=================  ===================================================  ============
``triples``        a, b, c: uint64 additive shares                        24
``bit_triples``    a, b, c: uint64 XOR shares of 64 packed AND gates      24
``dabits``         arithmetic uint64, binary share as one byte            9
``edabits:<k>``    arithmetic uint64, XOR share of the k bits as uint64   16
``input_masks``    uint64 additive share                                  8
=================  ===================================================  ============

Binary shares are stored per row (not bit-sliced); the reading side packs
them into the engine's planes.  XOR sharing commutes with that transpose.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np
from numpy.typing import NDArray

from tally.mpc import bits

KINDS = ("triples", "bit_triples", "dabits", "edabits", "input_masks")


@dataclass(frozen=True)
class Kind:
    """A parsed kind name: its base and (edaBits) width."""

    base: str
    width: int = 0

    @property
    def name(self) -> str:
        return f"{self.base}:{self.width}" if self.base == "edabits" else self.base

    @property
    def sections(self) -> tuple[np.dtype[np.generic], ...]:
        u64, u8 = np.dtype(np.uint64), np.dtype(np.uint8)
        if self.base in ("triples", "bit_triples"):
            return (u64, u64, u64)
        if self.base == "dabits":
            return (u64, u8)
        if self.base == "edabits":
            return (u64, u64)
        return (u64,)

    @property
    def tuple_bytes(self) -> int:
        return sum(dtype.itemsize for dtype in self.sections)


def parse_kind(name: str) -> Kind:
    """``"edabits:64"`` -> Kind("edabits", 64); raises ``ValueError`` for unknown kinds."""
    base, _, width = name.partition(":")
    if base not in KINDS:
        raise ValueError(f"unknown tuple kind {name!r}; known: {', '.join(KINDS)}")
    if base == "edabits":
        if not width.isdigit() or not 1 <= int(width) <= 64:
            raise ValueError(f"edaBit kinds are edabits:<width> with width 1..64, not {name!r}")
        return Kind(base, int(width))
    if width:
        raise ValueError(f"tuple kind {base!r} takes no width")
    return Kind(base)


def to_sections(kind: Kind, shares: tuple[NDArray[np.uint64], ...], count: int) -> list[bytes]:
    """The engine's share layout of ``count`` tuples -> this kind's stored sections."""
    if kind.base == "dabits":
        arith, packed = shares
        return [arith.tobytes(), bits.unpack_lanes(packed, count).tobytes()]
    if kind.base == "edabits":
        arith, planes = shares
        return [arith.tobytes(), bits.from_planes(planes, count).tobytes()]
    return [np.ascontiguousarray(s).tobytes() for s in shares]


def from_arrays(
    kind: Kind, arrays: Sequence[NDArray[np.generic]], *, copy: bool = True
) -> tuple[NDArray[np.uint64], ...]:
    """Typed sections of ``count`` tuples (``uint64`` / ``uint8`` arrays) -> the engine's layout.

    With ``copy=False`` the ``uint64`` sections are handed out as they are (views of
    the caller's buffer, which must not change afterwards); the binary sections of
    daBits and edaBits are always repacked into planes.
    """
    if kind.base == "dabits":
        return _words(arrays[0], copy), bits.pack_lanes(arrays[1])
    if kind.base == "edabits":
        return _words(arrays[0], copy), bits.to_planes(_words(arrays[1], False), kind.width)
    return tuple(_words(a, copy) for a in arrays)


def _words(array: NDArray[np.generic], copy: bool) -> NDArray[np.uint64]:
    return cast(NDArray[np.uint64], array.copy() if copy else array)


def from_sections(
    kind: Kind, sections: Sequence[bytes | memoryview], count: int
) -> tuple[NDArray[np.uint64], ...]:
    """Stored sections of ``count`` tuples -> the engine's share layout (copied)."""
    arrays = [
        np.frombuffer(data, dtype=dtype)
        for data, dtype in zip(sections, kind.sections, strict=True)
    ]
    return from_arrays(kind, arrays)
