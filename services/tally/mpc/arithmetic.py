"""Protocols on additive shares over Z_2^64: opening and Beaver multiplication (DESIGN §6.1).

Party i holds x_i with Σ x_i = x (mod 2^64).  Addition, subtraction and
multiplication by a public value are local; these two need communication.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tally.mpc import replicated
from tally.mpc.opening import open_vector
from tally.mpc.party import Party
from tally.mpc.ring import Shares


def open_values(party: Party, shares: Sequence[Shares]) -> list[Shares]:
    """Reveal every vector in ``shares`` to every party.

    The vectors are concatenated and opened together (:mod:`tally.mpc.opening`):
    broadcast, in 1 round and 8 bytes per element to each of the n-1 peers; or,
    from 2^16 elements on with three or more parties, through each party in turn,
    in 2 rounds and a third fewer bytes.  Callers open only values that are masked
    by a fresh random tuple or that the program's output policy allows.
    """
    flat = [np.asarray(s, dtype=np.uint64) for s in shares]
    sizes = [s.size for s in flat]
    joined = np.concatenate([s.ravel() for s in flat]) if flat else np.zeros(0, np.uint64)
    total = open_vector(party, joined, np.add)
    out, offset = [], 0
    for size, original in zip(sizes, flat, strict=True):
        out.append(total[offset : offset + size].reshape(original.shape))
        offset += size
    return out


def multiply(party: Party, pairs: Sequence[tuple[Shares, Shares]]) -> list[Shares]:
    """Beaver products x*y for every pair, all in one round.

    Steps, with a triple (a, b, c = a*b) per element: (1) open d = x - a and
    e = y - b together; (2) z = c + d*b + e*a, and party 0 adds d*e.
    Rounds: 1.  Communication: 16 bytes per product to each of the n-1 peers.
    d and e are x and y masked by the uniformly random a and b, used once, so
    they are uniform and independent of x and y.  With a replicated context
    (three parties, honest majority) no triple is used:
    :func:`tally.mpc.replicated.multiply`, 1 round, 16 bytes per product to one peer.
    """
    if not pairs:
        return []
    shapes = [np.shape(x) for x, _ in pairs]
    xs = np.concatenate([np.asarray(x, dtype=np.uint64).ravel() for x, _ in pairs])
    ys = np.concatenate([np.asarray(y, dtype=np.uint64).ravel() for _, y in pairs])
    if party.replicated is not None:
        product = replicated.multiply(party.replicated, party.transport, xs, ys)
    else:
        a, b, c = party.tuples.triples(xs.size)
        d, e = open_values(party, [xs - a, ys - b])
        product = c + d * b
        product += e * a
        if party.is_leader:
            product += d * e
    out, offset = [], 0
    for shape in shapes:
        size = int(np.prod(shape))
        out.append(product[offset : offset + size].reshape(shape))
        offset += size
    return out


def add_public(party: Party, shares: Shares, value: Shares | np.uint64 | int) -> Shares:
    """Shares of x + v for a public v: party 0 adds v, the others keep their share."""
    if party.is_leader:
        return shares + np.asarray(value).astype(np.uint64)
    return np.array(shares, dtype=np.uint64, copy=True) + np.zeros(np.shape(value), np.uint64)


def public_to_shares(party: Party, value: Shares) -> Shares:
    """A public vector as trivial shares: party 0 holds it, the others hold zeros."""
    if party.is_leader:
        return np.array(value, dtype=np.uint64, copy=True)
    return np.zeros(np.shape(value), dtype=np.uint64)
