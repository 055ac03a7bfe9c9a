"""2-out-of-3 replicated secret sharing from pairwise keys (Araki et al., CCS 2016).

Three parties P0, P1, P2.  Key k_j is known to P_j and P_{j-1} (indices mod 3),
so P_i holds k_i and k_{i+1}, plus a private key no one else has.  A value
v = v_0 + v_1 + v_2 is *replicated* when P_i holds the pair (v_i, v_{i+1});
every component is known to exactly two parties and no single party knows v.

What this module provides, with its cost:

* :func:`agree_keys`: each P_i draws k_i from the OS CSPRNG and sends it to
  P_{i-1}.  One round, 16 bytes per party, once per generator session.
* random replicated values: v_j = PRF(k_j, label).  No communication.
* zero sharings: alpha_i = PRF(k_i, label) - PRF(k_{i+1}, label) (or XOR).
  The three alpha_i sum to 0.  No communication.
* :meth:`PairKeys.product`: P_i's local term x_i y_i + x_i y_{i+1} + x_{i+1} y_i
  plus a zero sharing.  The three terms cover all nine x_j y_k, so they are
  additive (3-out-of-3) shares of x*y.  No communication.
* :meth:`PairKeys.reshare`: additive shares z_i back to replicated form by
  sending z_i to P_{i-1}.  One round, one ring element (or one bit) per party.
* :meth:`PairKeys.bit_to_arith`: a replicated bit c = c_0 ^ c_1 ^ c_2 to
  additive shares over Z_2^64; P_s knows u = c_s ^ c_{s+1}, and
  c = u + w - 2uw with w = c_{s+2}; P_s sends m = u + mu (mu from k_{s+1},
  unknown to the receiver) to P_{s+2}, who holds m*w while P_{s+1} holds
  -mu*w.  One round; the sender role rotates over thirds of the batch, so each
  party sends 8/3 bytes per converted bit.

Freshness: every additive share handed to the online engine includes a zero
sharing drawn under a label of its own.  P_i's view of the other two shares
is then uniform subject to their sum (both contain PRF(k_{i+2}, ...), which
P_i cannot compute), exactly as if a dealer had split the value; the keys P_i
holds tell it nothing more about the others' shares.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from tally.mpc.offline.prf import KEY_BYTES, Prf, fresh_key
from tally.mpc.transport import Transport

Words = NDArray[np.uint64]
Replicated = tuple[Words, Words]
"""This party's two components (v_i, v_{i+1}) of a replicated value."""

PARTIES = 3


class SetupError(RuntimeError):
    """The parties could not agree on keys (wrong party count, malformed message)."""


@dataclass(frozen=True)
class PairKeys:
    """P_i's keys: k_i (shared with P_{i-1}), k_{i+1} (shared with P_{i+1}) and its own.

    Never log or persist these: anyone holding two parties' keys can rebuild
    every tuple generated under them.
    """

    party: int
    own: bytes
    next: bytes
    private: bytes
    prf: Prf

    def __repr__(self) -> str:  # keep keys out of logs and tracebacks
        return f"PairKeys(party={self.party}, prf={self.prf.name})"

    @property
    def prev_party(self) -> int:
        return (self.party - 1) % PARTIES

    @property
    def next_party(self) -> int:
        return (self.party + 1) % PARTIES

    def key_of(self, component: int) -> bytes:
        """k_component, which this party must hold (its own index or the next)."""
        component %= PARTIES
        if component == self.party:
            return self.own
        if component == self.next_party:
            return self.next
        raise ValueError(f"party {self.party} does not hold key k_{component}")

    def words(self, component: int, label: bytes, count: int) -> Words:
        """PRF(k_component, label): the component of a random value, known to two parties."""
        return self.prf.words(self.key_of(component), label, count)

    def private_words(self, label: bytes, count: int) -> Words:
        """Words from this party's private key, known to no other party."""
        return self.prf.words(self.private, label, count)

    def random(self, label: bytes, count: int) -> Replicated:
        """This party's components of a uniformly random replicated value."""
        return (
            self.prf.words(self.own, label, count),
            self.prf.words(self.next, label, count),
        )

    def zero(self, label: bytes, count: int) -> Words:
        """An additive sharing of zero: PRF(k_i) - PRF(k_{i+1})."""
        own, following = self.random(label, count)
        own -= following
        return own

    def zero_xor(self, label: bytes, count: int) -> Words:
        """An XOR sharing of zero: PRF(k_i) ^ PRF(k_{i+1})."""
        own, following = self.random(label, count)
        own ^= following
        return own

    def product(self, x: Replicated, y: Replicated, label: bytes) -> Words:
        """Additive shares of x*y over Z_2^64 (local; fresh by a zero sharing)."""
        out = x[0] * y[0]
        out += x[0] * y[1]
        out += x[1] * y[0]
        out += self.zero(label, out.size).reshape(out.shape)
        return out

    def product_xor(self, x: Replicated, y: Replicated, label: bytes) -> Words:
        """XOR shares of x AND y on packed words (local; fresh by a zero sharing)."""
        out = x[0] & y[0]
        out ^= x[0] & y[1]
        out ^= x[1] & y[0]
        out ^= self.zero_xor(label, out.size).reshape(out.shape)
        return out

    def reshare(self, transport: Transport, share: Words) -> Replicated:
        """Additive (or XOR) shares z_i to replicated (z_i, z_{i+1}): send z_i to P_{i-1}."""
        received = transport.exchange({self.prev_party: [share]}, [self.next_party])
        following = received[self.next_party][0].view(np.uint64).reshape(share.shape)
        return share, following

    def and_replicated(
        self, transport: Transport, x: Replicated, y: Replicated, label: bytes
    ) -> Replicated:
        """x AND y for replicated packed words.  Rounds: 1.  One bit per AND gate per party."""
        return self.reshare(transport, self.product_xor(x, y, label))

    def bit_to_arith(self, transport: Transport, bits: Replicated, label: bytes) -> Words:
        """Additive shares over Z_2^64 of replicated bits (0/1 words, one bit per element).

        P_s is the sender for the s-th third of the elements; see the module
        docstring.  Rounds: 1.
        """
        count = bits[0].shape[0]
        bounds = [count * s // PARTIES for s in range(PARTIES + 1)]
        me = self.party
        out = np.empty(count, dtype=np.uint64)

        def part(s: int) -> slice:
            return slice(bounds[s], bounds[s + 1])

        # Slice where this party sends: it knows c_s = bits[0] and c_{s+1} = bits[1].
        mine = part(me)
        u = bits[0][mine] ^ bits[1][mine]
        mu_out = self.prf.words(self.next, label, u.size)
        out[mine] = u
        # Slice of sender s = me - 1: this party is s + 1, w = c_{s+2} = bits[1], mu from k_me.
        before = part(self.prev_party)
        w = bits[1][before]
        mu_in = self.prf.words(self.own, label, w.size)
        out[before] = w + (mu_in * w << np.uint64(1))
        # Slice of sender s = me + 1: this party is s + 2, w = c_{s+2} = bits[0]; m comes from s.
        received = transport.exchange({self.prev_party: [u + mu_out]}, [self.next_party])
        after = part(self.next_party)
        masked = received[self.next_party][0].view(np.uint64)
        out[after] = np.uint64(0) - (masked * bits[0][after] << np.uint64(1))
        out += self.zero(label + b"/fresh", count)
        return out


def agree_keys(transport: Transport, prf: Prf) -> PairKeys:
    """Set up pairwise keys: P_i draws k_i and sends it to P_{i-1}.  Rounds: 1; 16 bytes."""
    if transport.parties != PARTIES:
        raise SetupError(f"hm3 needs exactly 3 parties, this transport has {transport.parties}")
    party = transport.party
    own = fresh_key()
    received = transport.exchange(
        {(party - 1) % PARTIES: [np.frombuffer(own, dtype=np.uint8)]}, [(party + 1) % PARTIES]
    )
    arrays = received[(party + 1) % PARTIES]
    if len(arrays) != 1 or arrays[0].nbytes != KEY_BYTES:
        raise SetupError("the next party sent a malformed key")
    following = np.ascontiguousarray(arrays[0]).tobytes()
    return PairKeys(party, own, following, fresh_key(), prf)
