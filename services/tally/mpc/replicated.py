"""The honest-majority online path for three parties: products without triples (DESIGN §6.1).

With three parties of whom at most one is corrupt (the ``hm3`` trust model), the
online protocols need no Beaver triples, bit triples, daBits or edaBits: pairwise
keys (:class:`tally.mpc.offline.replicated.PairKeys`, agreed once per job in one
round of 16 bytes) let the parties turn their additive shares into 2-out-of-3
replicated ones on the fly, and a product of replicated values is local.  The
engine keeps its additive (3-out-of-3) shares at rest, so tables, group-by and sort
run unchanged: :func:`tally.mpc.arithmetic.multiply`, :func:`tally.mpc.boolean.and_words`
and the comparisons of :mod:`tally.mpc.compare` take this path when the party carries
a :class:`Replicated` context.

Notation: P_i holds keys k_i (shared with P_{i-1}) and k_{i+1} (shared with
P_{i+1}).  A zero sharing is zeta_i = PRF(k_i) - PRF(k_{i+1}) (XOR for bits); it
sums to 0, and P_{i-1} cannot compute zeta_i (it lacks k_{i+1}).

* **Re-randomised resharing** (every protocol below starts with it): x'_i = x_i + zeta_i,
  and P_i sends x'_i to P_{i-1}.  P_{i-1} then holds (x'_{i-1}, x'_i), a replicated
  sharing of x; x'_i is uniform to it whatever the sharing x was (a trivial one
  such as (v, 0, 0) included), so the message reveals nothing.
* **Product** (:func:`multiply`): reshare x and y, then
  z_i = x'_i y'_i + x'_i y'_{i+1} + x'_{i+1} y'_i + zeta_i: the three terms cover
  all nine x'_j y'_k, so the z_i are additive shares of x*y, fresh by the zero
  sharing.  Rounds: 1.  Bytes: 16 per product to one peer (Beaver: 16 to each of
  two peers, plus a triple).
* **AND** (:func:`and_words`): the same over XOR/AND on packed words: 2 bits per
  gate to one peer, 1 round.
* **Two summands** (:func:`two_summands`): x = a + b with a = x'_0 known to P0 and
  b = x'_1 + x'_2 known to P1 (P2 sends x'_2 to P1: 8 bytes per element, 1 round).
  Each of a and b is then its holder's private input to a binary circuit
  (bit-decomposed locally, XOR-shared trivially); the circuits' ANDs re-randomise
  them.  This replaces the masked opening of an edaBit in every comparison.
* **Bit to arithmetic** (:func:`bits_to_arithmetic`): reshare XOR-shared bits
  (1 round, 1 bit per bit), then :meth:`PairKeys.bit_to_arith` (1 round, 8/3 bytes
  per bit).  Replaces the daBit.

What is opened: nothing.  Every message is a share re-randomised by a zero sharing
its receiver cannot compute; every output is fresh (it includes a zero sharing of
its own), so a later opening reveals only the value.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tally.mpc import bits
from tally.mpc.offline.prf import Prf
from tally.mpc.offline.replicated import PairKeys, agree_keys
from tally.mpc.ring import Shares
from tally.mpc.transport import Transport, TransportError


@dataclass
class Replicated:
    """One party's pairwise keys for the online path and the label of its next draw.

    Every draw uses a label of its own (``online/<n>``); all three parties make the
    same calls in the same order, so the n-th labels agree.  Never log the keys.
    """

    keys: PairKeys
    draws: int = field(default=0)

    def __repr__(self) -> str:  # keep keys out of logs and tracebacks
        return f"Replicated(party={self.keys.party}, draws={self.draws})"

    @classmethod
    def agree(cls, transport: Transport, prf: Prf) -> Replicated:
        """Agree pairwise keys over ``transport`` (1 round, 16 bytes per party)."""
        return cls(agree_keys(transport, prf))

    def label(self) -> bytes:
        """A label no earlier draw used."""
        self.draws += 1
        return b"online/%d" % self.draws

    def zeros(self, count: int) -> Shares:
        """A fresh additive sharing of ``count`` zeros."""
        return self.keys.zero(self.label(), count)

    def zeros_xor(self, count: int) -> Shares:
        """A fresh XOR sharing of ``count`` zero words."""
        return self.keys.zero_xor(self.label(), count)


def _received(transport: Transport, outgoing: dict[int, list[Shares]], peer: int) -> list[Shares]:
    """Send ``outgoing`` and return ``peer``'s arrays as ``uint64`` (one round)."""
    arrays = transport.exchange(outgoing, [peer])[peer]
    return [np.ascontiguousarray(a).view(np.uint64) for a in arrays]


def _reshare(rep: Replicated, transport: Transport, values: list[Shares]) -> list[Shares]:
    """Send each (already re-randomised) flat vector to P_{i-1}; returns P_{i+1}'s."""
    keys = rep.keys
    got = _received(transport, {keys.prev_party: values}, keys.next_party)
    if [g.size for g in got] != [v.size for v in values]:
        raise TransportError(f"party {keys.next_party} sent a resharing of the wrong length")
    return got


def multiply(rep: Replicated, transport: Transport, xs: Shares, ys: Shares) -> Shares:
    """Additive shares of xs * ys (flat vectors of one length): 1 round, 16 bytes per product."""
    count = xs.size
    zeta = rep.zeros(3 * count)
    x = xs + zeta[:count]
    y = ys + zeta[count : 2 * count]
    x_next, y_next = _reshare(rep, transport, [x, y])
    out = x * (y + y_next)
    out += x_next * y
    out += zeta[2 * count :]
    return out


def and_words(rep: Replicated, transport: Transport, xs: Shares, ys: Shares) -> Shares:
    """XOR shares of xs AND ys on packed words: 1 round, 2 bits per gate to one peer."""
    count = xs.size
    zeta = rep.zeros_xor(3 * count)
    x = xs ^ zeta[:count]
    y = ys ^ zeta[count : 2 * count]
    x_next, y_next = _reshare(rep, transport, [x, y])
    out = x & (y ^ y_next)
    out ^= x_next & y
    out ^= zeta[2 * count :]
    return out


def two_summands(rep: Replicated, transport: Transport, values: Shares) -> tuple[Shares, Shares]:
    """(a, b) with a + b = x: a is P0's own, b P1's own; zeros at the others.  Rounds: 1.

    P2 sends x'_2 = x_2 + zeta_2 to P1, which cannot compute zeta_2 (it lacks k_0):
    P1 then knows x'_1 and x'_2 and nothing of x'_0, which stays P0's alone.
    """
    keys = rep.keys
    fresh = values + rep.zeros(values.size).reshape(values.shape)
    zero = np.zeros_like(fresh)
    if keys.party == 2:
        transport.exchange({1: [fresh]}, [])
        return zero, zero
    if keys.party == 1:
        (from_two,) = _received(transport, {}, 2)
        if from_two.size != fresh.size:
            raise TransportError("party 2 sent a summand of the wrong length")
        return zero, fresh + from_two.reshape(fresh.shape)
    transport.exchange({}, [])
    return fresh, zero


def summand_planes(values: Shares, width: int, holds: bool) -> Shares:
    """The low ``width`` bit planes of a summand, as a trivial XOR sharing of its holder."""
    if holds:
        return bits.to_planes(values, width)
    return np.zeros((width, bits.word_count(values.shape[0])), dtype=np.uint64)


def bits_to_arithmetic(rep: Replicated, transport: Transport, planes: Shares, rows: int) -> Shares:
    """XOR-shared planes ``(k, words)`` to arithmetic 0/1 shares ``(k, rows)``.

    Steps: (1) reshare the re-randomised planes (1 round, 1 bit per bit); (2) each
    party unpacks its two components and :meth:`PairKeys.bit_to_arith` converts the
    replicated bits (1 round, 8/3 bytes per bit per party).  Rounds: 2.
    """
    if planes.ndim != 2:
        planes = planes.reshape(-1, planes.shape[-1])
    count, words = planes.shape
    if rows == 0 or words == 0:
        return np.zeros((count, rows), dtype=np.uint64)
    fresh = (planes.ravel() ^ rep.zeros_xor(planes.size)).reshape(planes.shape)
    (following,) = _reshare(rep, transport, [fresh.ravel()])
    own = _unpacked(fresh, rows)
    nxt = _unpacked(following.reshape(planes.shape), rows)
    out = rep.keys.bit_to_arith(transport, (own, nxt), rep.label())
    return out.reshape(count, rows)


def _unpacked(planes: Shares, rows: int) -> Shares:
    """Packed planes ``(k, words)`` to one 0/1 ``uint64`` per bit and row, flat."""
    unpacked = np.unpackbits(np.ascontiguousarray(planes).view(np.uint8), axis=1, bitorder="little")
    return unpacked[:, :rows].astype(np.uint64).ravel()
