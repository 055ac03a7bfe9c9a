"""Producing chunks: one kind, one chunk id, this party's shares as stored sections.

``hm3`` chunks are labelled ``session/chunk/<id>`` under the session's keys, so
the three parties derive shares of the same tuples.  The dealer (development,
or a genuinely separate dealer process) samples full tuples and splits them.
"""

from __future__ import annotations

import numpy as np

from tally.mpc.offline import Hm3Generator
from tally.mpc.offline.layout import Kind, to_sections
from tally.mpc.tuples import Dealer


def chunk_label(session: str, chunk_id: int) -> bytes:
    """The hm3 batch label of one chunk (chunk ids are global, so labels never repeat)."""
    return f"{session}/chunk/{chunk_id}".encode()


def hm3_chunk(generator: Hm3Generator, kind: Kind, label: bytes, count: int) -> list[bytes]:
    """This party's shares of ``count`` tuples of ``kind``, generated with hm3."""
    if kind.base == "triples":
        shares: tuple[np.ndarray, ...] = generator.triples(label, count)
    elif kind.base == "bit_triples":
        shares = generator.bit_triples(label, count)
    elif kind.base == "dabits":
        shares = generator.dabits(label, count)
    elif kind.base == "edabits":
        shares = generator.edabits(label, count, kind.width)
    else:
        shares = (generator.input_masks(label, count),)
    return to_sections(kind, shares, count)


def dealer_chunks(
    kind: Kind, count: int, parties: int, seed: int | None = None
) -> list[list[bytes]]:
    """Every party's sections of one chunk sampled by a dealer (index = party)."""
    dealer = Dealer(parties, seed=seed)
    out = []
    for party in range(parties):
        source = dealer.source(party)
        if kind.base == "triples":
            shares: tuple[np.ndarray, ...] = source.triples(count)
        elif kind.base == "bit_triples":
            shares = source.bit_triples(count)
        elif kind.base == "dabits":
            shares = source.dabits(count)
        elif kind.base == "edabits":
            shares = source.edabits(count, kind.width)
        else:
            shares = (source.input_masks(count),)
        out.append(to_sections(kind, shares, count))
    return out
