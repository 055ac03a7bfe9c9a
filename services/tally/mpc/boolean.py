"""Protocols on XOR shares of packed bits (DESIGN §3, §6.1).

Each ``uint64`` word carries 64 independent lanes; XOR and NOT are local,
AND uses one bit triple per lane.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tally.mpc import replicated
from tally.mpc.opening import open_vector
from tally.mpc.party import Party
from tally.mpc.ring import Shares

ALL_ONES = np.uint64(0xFFFFFFFFFFFFFFFF)


def open_bits(party: Party, shares: Sequence[Shares]) -> list[Shares]:
    """Reveal XOR-shared words, as :func:`tally.mpc.arithmetic.open_values` does sums."""
    flat = [np.asarray(s, dtype=np.uint64) for s in shares]
    joined = np.concatenate([s.ravel() for s in flat]) if flat else np.zeros(0, np.uint64)
    total = open_vector(party, joined, np.bitwise_xor)
    out, offset = [], 0
    for original in flat:
        out.append(total[offset : offset + original.size].reshape(original.shape))
        offset += original.size
    return out


def and_words(party: Party, pairs: Sequence[tuple[Shares, Shares]]) -> list[Shares]:
    """x AND y on packed words for every pair, in one round.

    Steps, with a bit triple (a, b, c = a AND b) per word: (1) open d = x XOR a
    and e = y XOR b together; (2) z = c XOR (d AND b) XOR (e AND a), and
    party 0 also XORs d AND e.  Rounds: 1.  Communication: 2 bits per AND gate
    (16 bytes per 64 lanes) to each of the n-1 peers.  d and e are one-time
    pads of x and y with the uniform a and b.  With a replicated context no bit
    triple is used (:func:`tally.mpc.replicated.and_words`: 1 round, 2 bits per gate
    to one peer).
    """
    if not pairs:
        return []
    shapes = [np.shape(x) for x, _ in pairs]
    xs = np.concatenate([np.asarray(x, dtype=np.uint64).ravel() for x, _ in pairs])
    ys = np.concatenate([np.asarray(y, dtype=np.uint64).ravel() for _, y in pairs])
    if party.replicated is not None:
        result = replicated.and_words(party.replicated, party.transport, xs, ys)
    else:
        a, b, c = party.tuples.bit_triples(xs.size)
        d, e = open_bits(party, [xs ^ a, ys ^ b])
        result = c ^ (d & b)
        result ^= e & a
        if party.is_leader:
            result ^= d & e
    out, offset = [], 0
    for shape in shapes:
        size = int(np.prod(shape))
        out.append(result[offset : offset + size].reshape(shape))
        offset += size
    return out


def xor_public(party: Party, shares: Shares, value: Shares | np.uint64) -> Shares:
    """XOR a public value into shared words: only party 0 applies it."""
    if party.is_leader:
        return shares ^ value
    return np.array(shares, dtype=np.uint64, copy=True)


def not_words(party: Party, shares: Shares) -> Shares:
    """Bitwise NOT of shared words (party 0 flips its share)."""
    return xor_public(party, shares, ALL_ONES)
