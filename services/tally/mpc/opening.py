"""Opening a shared vector to every party (DESIGN §6.1): broadcast, or through each party in turn.

Broadcast: every party sends its whole share to every peer and adds what it
receives.  Rounds: 1.  Each party sends 8 bytes per element to each of the n-1
peers: 2 words per element with three parties.

Through the parties in turn, for long vectors and n >= 3: the vector is cut into
n pieces and party k opens piece k.  (1) every party sends its share of piece k
to party k; (2) party k adds them and sends the opened piece to every peer.
Rounds: 2.  Each party sends (n-1)/n of its share and (n-1) copies of one
piece: 2(n-1)/n words per element, 4/3 instead of 2 with three parties, a third
less.  What party k learns in step 1 is the opened piece, which every party
learns in step 2 anyway, so this reveals nothing more than broadcasting.
Short vectors are broadcast: there the round, not the bytes, is what costs.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tally.mpc.party import Party
from tally.mpc.ring import Shares

IN_TURN_MIN_ELEMENTS = 1 << 16
"""Vectors at least this long are opened through each party in turn (n >= 3)."""

Combine = Callable[..., Shares]
"""``np.add`` (additive shares) or ``np.bitwise_xor`` (XOR shares), called with ``out=``."""


def open_vector(party: Party, shares: Shares, combine: Combine) -> Shares:
    """The opened value of a flat ``uint64`` share vector, known to every party afterwards."""
    if party.parties < 3 or shares.size < IN_TURN_MIN_ELEMENTS:
        total = shares.copy()
        for arrays in party.transport.broadcast([shares]).values():
            combine(total, arrays[0].view(np.uint64), out=total)
        return total
    return _open_in_turn(party, shares, combine)


def _open_in_turn(party: Party, shares: Shares, combine: Combine) -> Shares:
    parties, me = party.parties, party.id
    bounds = [shares.size * k // parties for k in range(parties + 1)]
    peers = [p for p in range(parties) if p != me]
    received = party.transport.exchange(
        {k: [shares[bounds[k] : bounds[k + 1]]] for k in peers}, peers
    )
    piece = shares[bounds[me] : bounds[me + 1]].copy()
    for arrays in received.values():
        combine(piece, arrays[0].view(np.uint64), out=piece)
    opened = party.transport.exchange({p: [piece] for p in peers}, peers)
    total = np.empty_like(shares)
    total[bounds[me] : bounds[me + 1]] = piece
    for k, arrays in opened.items():
        part = arrays[0].view(np.uint64)
        if part.size != bounds[k + 1] - bounds[k]:
            raise ValueError(f"party {k} opened a piece of the wrong length")
        total[bounds[k] : bounds[k + 1]] = part
    return total
