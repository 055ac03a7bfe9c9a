"""Producing chunks: one kind, one chunk id, this party's shares as stored sections.

``hm3`` chunks are labelled ``session/chunk/<id>`` under the session's keys, so
the three parties derive shares of the same tuples.  The dealer (development,
or a genuinely separate dealer process) samples full tuples from the OS CSPRNG
and splits them; its shuffle correlations are derived from its own key with a
cryptographic PRF, so every party fetching one gets a matching share.
"""

from __future__ import annotations

import numpy as np

from tally.mpc.offline import Hm3Generator
from tally.mpc.offline.layout import Kind, to_sections
from tally.mpc.offline.ot import OtGenerator
from tally.mpc.offline.prf import Prf, Words
from tally.mpc.tuples import Dealer, HelperShare, PermuterShare, ShuffleShare


def chunk_label(session: str, chunk_id: int) -> bytes:
    """The hm3 batch label of one chunk (chunk ids are global, so labels never repeat)."""
    return f"{session}/chunk/{chunk_id}".encode()


def hm3_chunk(
    generator: Hm3Generator | OtGenerator, kind: Kind, label: bytes, count: int
) -> list[bytes]:
    """This party's shares of ``count`` tuples of ``kind``, generated with hm3 or ot.

    With ot every party must run this at once (the chunk is generated interactively).
    """
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


def dealer_shuffle(
    prf: Prf, key: bytes, label: bytes, parties: int, rows: int, kinds: str
) -> list[ShuffleShare]:
    """Every party's share of one shuffle correlation (index = party), derived from ``key``.

    The layout of the local ``Dealer``: per permuter j, a permutation pi_j and
    Delta_j = pi_j(sum of the helpers' masks) + sum of the helpers' outputs; each
    helper holds its mask and output.  Every value comes from PRF(key, label/j/name);
    the label names rows and kinds too, so two shapes never share randomness.
    """
    if set(kinds) - {"a", "x"}:
        raise ValueError("shuffle column kinds are 'a' (additive) or 'x' (XOR)")
    xor = np.array([k == "x" for k in kinds], dtype=bool)
    shape = (rows, len(kinds))
    framed = len(label).to_bytes(4, "little") + label + f"/{rows}/{kinds}".encode()
    out: list[ShuffleShare] = [[] for _ in range(parties)]

    def draw(name: str, count: int) -> Words:
        return prf.words(key, framed + b"/" + name.encode(), count)

    for permuter in range(parties):
        permutation = np.argsort(draw(f"{permuter}/pi", rows), kind="stable").astype(np.int64)
        mask_total = np.zeros(shape, dtype=np.uint64)
        output_total = np.zeros(shape, dtype=np.uint64)
        for helper in range(parties):
            if helper == permuter:
                continue
            mask = draw(f"{permuter}/mask/{helper}", rows * len(kinds)).reshape(shape)
            output = draw(f"{permuter}/output/{helper}", rows * len(kinds)).reshape(shape)
            mask_total = np.where(xor, mask_total ^ mask, mask_total + mask)
            output_total = np.where(xor, output_total ^ output, output_total + output)
            out[helper].append(HelperShare(mask, output))
        moved = mask_total[permutation]
        delta = np.where(xor, moved ^ output_total, moved + output_total)
        out[permuter].append(PermuterShare(permutation, delta))
    return out
