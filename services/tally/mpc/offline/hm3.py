"""The ``hm3`` generator: every tuple type of DESIGN §4 for three parties, no dealer, no OT.

Semi-honest security against any one corrupt party (honest majority), built
on :mod:`tally.mpc.offline.replicated` (notation there: P_i holds k_i and
k_{i+1}; v_j = PRF(k_j, label) is known to P_j and P_{j-1}).  Every method
returns this party's shares in exactly the layout the local ``Dealer`` gives,
so the online engine consumes them unchanged.  Every share handed out
includes a fresh zero sharing, so what a party learns about the others'
shares is what a dealer's split would tell it: nothing beyond their sum.

Constructions (communication per tuple, per party, after key agreement):

* ``triples``: a, b random replicated; c_i = a_i b_i + a_i b_{i+1} + a_{i+1} b_i
  plus a zero sharing; a and b leave as a_i and b_i plus zero sharings.
  **0 bytes**, no rounds.  (Araki et al.'s one ring element per product is the
  price of returning c in *replicated* form; the engine wants additive shares.)
* ``bit_triples``: the same on packed words with XOR and AND.  **0 bytes.**
* ``input_masks``: r_i from P_i's private key.  **0 bytes.**
* ``shuffle``: one step per permuter j, in the engine's format.  pi_j comes from
  k_{j+1}, so P_j and P_{j+1} know it and P_{j+2} does not; every single
  party misses one of the three permutations, so none knows their
  composition.  With a_co, a_third, G from k_{j+2} (P_{j+1}, P_{j+2}), rho from
  k_{j+1} (P_j, P_{j+1}) and F from k_j (P_j, P_{j+2}):
  P_j holds (pi_j, Delta = rho + F); P_{j+1} holds (a_co, rho - pi_j(a_co + a_third) - G);
  P_{j+2} holds (a_third, F + G).  Then Delta = pi_j(a_co + a_third) + b_co + b_third
  as the engine requires.  **0 bytes.**  The helpers' masks are unknown to the
  permuter; each party's view of the other two output shares is uniform
  (G hides the third's from P_j, F from P_{j+1}, rho from P_{j+2}).
* ``dabits``: r = r_0 ^ r_1 ^ r_2 with r_j = PRF(k_j) bits; the XOR shares are
  r_i plus a zero sharing; the arithmetic shares come from
  ``bit_to_arith``.  1 round, **8/3 bytes** per daBit per party.
* ``edabits(k)``: components r_0, r_1, r_2, each k random bits.  The value
  r_0 + r_1 + r_2 is free in replicated arithmetic form; its bits come from a
  binary adder on replicated bits: a carry-save layer (k - 1 ANDs, 1 round)
  and a ripple-carry adder (k - 2 ANDs, k - 2 rounds), each AND one bit per
  party.  For k < 64 the two carries out of bit k - 1 are converted with
  ``bit_to_arith`` and 2^k times their sum is subtracted, so r < 2^k.
  k = 64: 125 ANDs, **about 15.6 bytes** per edaBit per party, 63 rounds per
  batch; k < 64: (2k - 1) bits + 2 * 8/3 bytes, k + 1 rounds.

What each party learns: its two keys' outputs (two of the three components
of every random value, never the value), the reshared AND outputs (uniform
components, each masked by a zero sharing it cannot compute), and in
``bit_to_arith`` one word u + mu per converted bit, where mu comes from a key
it does not hold.  Nothing depends on any other party's private data.
"""

from __future__ import annotations

import numpy as np

from tally.mpc import bits
from tally.mpc.offline.replicated import PARTIES, PairKeys, Replicated, Words
from tally.mpc.ring import ColumnRuns, column_runs, combine_columns
from tally.mpc.transport import Transport
from tally.mpc.tuples import HelperShare, Permutation, PermuterShare, ShuffleShare

Shares = Words


class Hm3Generator:
    """This party's end of the ``hm3`` protocols; labels must never repeat under one key set.

    ``transport`` is needed only by ``dabits`` and ``edabits`` (the others
    are computed locally from the keys).
    """

    def __init__(self, keys: PairKeys, transport: Transport | None = None) -> None:
        self.keys = keys
        self.transport = transport
        self.party = keys.party

    def _link(self) -> Transport:
        if self.transport is None:
            raise ValueError("daBits and edaBits need a transport to the other two parties")
        return self.transport

    def triples(self, label: bytes, count: int) -> tuple[Shares, Shares, Shares]:
        """Beaver triples (a, b, c = a*b): additive shares, 0 bytes sent."""
        label = _frame(label)
        keys = self.keys
        a = keys.random(label + b"/a", count)
        b = keys.random(label + b"/b", count)
        c = keys.product(a, b, label + b"/c")
        return a[0] + keys.zero(label + b"/za", count), b[0] + keys.zero(label + b"/zb", count), c

    def bit_triples(self, label: bytes, words: int) -> tuple[Shares, Shares, Shares]:
        """Packed AND triples (a, b, c = a & b): XOR shares, 0 bytes sent."""
        label = _frame(label)
        keys = self.keys
        a = keys.random(label + b"/a", words)
        b = keys.random(label + b"/b", words)
        c = keys.product_xor(a, b, label + b"/c")
        return (
            a[0] ^ keys.zero_xor(label + b"/za", words),
            b[0] ^ keys.zero_xor(label + b"/zb", words),
            c,
        )

    def input_masks(self, label: bytes, count: int) -> Shares:
        """Random masks r: this party's share r_i from its private key, 0 bytes sent."""
        label = _frame(label)
        return self.keys.private_words(label + b"/mask", count)

    def dabits(self, label: bytes, count: int) -> tuple[Shares, Shares]:
        """Random bits in both domains: arithmetic shares ``(count,)``, XOR-shared packed words."""
        label = _frame(label)
        keys = self.keys
        words = bits.word_count(count)
        packed = keys.random(label + b"/r", words)
        if count % 64:
            keep = bits.lane_mask(count)
            packed = (packed[0] & keep, packed[1] & keep)
        binary = packed[0] ^ keys.zero_xor(label + b"/zr", words)
        if count == 0:
            return np.zeros(0, dtype=np.uint64), binary
        lanes = (
            bits.unpack_lanes(packed[0], count).astype(np.uint64),
            bits.unpack_lanes(packed[1], count).astype(np.uint64),
        )
        arith = keys.bit_to_arith(self._link(), lanes, label + b"/b2a")
        return arith, binary

    def edabits(self, label: bytes, count: int, width: int) -> tuple[Shares, Shares]:
        """Random r < 2^width: arithmetic shares ``(count,)`` and XOR shares of its planes."""
        if not 1 <= width <= 64:
            raise ValueError("edaBit width must be 1..64")
        label = _frame(label)
        keys, me = self.keys, self.party
        words = bits.word_count(count)
        own = keys.words(me, label + b"/r", width * words).reshape(width, words)
        following = keys.words(me + 1, label + b"/r", width * words).reshape(width, words)
        value = bits.from_planes(own, count)
        value += keys.zero(label + b"/zv", count)
        summed, carries = _add_components(keys, self._link(), own, following, label, width)
        binary = summed[0] ^ keys.zero_xor(label + b"/zs", width * words).reshape(width, words)
        if width < 64 and count:
            lanes = (
                np.concatenate([bits.unpack_lanes(p, count) for p in carries[0]]),
                np.concatenate([bits.unpack_lanes(p, count) for p in carries[1]]),
            )
            arith = keys.bit_to_arith(
                self._link(), (lanes[0].astype(np.uint64), lanes[1].astype(np.uint64)), label
            )
            value -= (arith[:count] + arith[count:]) << np.uint64(width)
        return value, binary

    def shuffle(self, label: bytes, rows: int, kinds: str) -> ShuffleShare:
        """Permutation correlations in the engine's format (one step per permuter), 0 bytes sent."""
        if set(kinds) - {"a", "x"}:
            raise ValueError("shuffle column kinds are 'a' (additive) or 'x' (XOR)")
        label = _frame(label)
        keys, me = self.keys, self.party
        width = len(kinds)
        runs = column_runs(kinds)
        shape = (rows, width)
        out: ShuffleShare = []

        def draw(component: int, name: bytes) -> Words:
            return keys.words(component, label + b"/" + name, rows * width).reshape(shape)

        for j in range(PARTIES):
            step = str(j).encode()
            role = (me - j) % PARTIES
            if role == 0:  # the permuter: pi_j, rho from k_{j+1}; F from k_j
                permutation = _permutation(keys, j + 1, label + b"/pi" + step, rows)
                delta = _combine_into(draw(j + 1, b"rho" + step), draw(j, b"F" + step), runs)
                out.append(PermuterShare(permutation, delta))
            elif role == 1:  # the co-knower: pi_j, rho from k_{j+1}; masks, G from k_{j+2}
                permutation = _permutation(keys, j + 1, label + b"/pi" + step, rows)
                mask = draw(j + 2, b"aco" + step)
                total = _combine_into(draw(j + 2, b"athird" + step), mask, runs)
                moved = np.take(total, permutation, axis=0)
                output = _combine_into(draw(j + 1, b"rho" + step), moved, runs, subtract=True)
                output = _combine_into(output, draw(j + 2, b"G" + step), runs, subtract=True)
                out.append(HelperShare(mask, output))
            else:  # the third: masks, G from k_{j+2}; F from k_j
                mask = draw(j + 2, b"athird" + step)
                output = _combine_into(draw(j, b"F" + step), draw(j + 2, b"G" + step), runs)
                out.append(HelperShare(mask, output))
        return out


def _frame(label: bytes) -> bytes:
    """Length-prefix a batch label so that no batch's derived labels collide with another's."""
    return len(label).to_bytes(4, "little") + label


def _permutation(keys: PairKeys, component: int, label: bytes, rows: int) -> Permutation:
    """A permutation of ``rows`` known to the two holders of k_component (argsort of PRF words).

    Both holders must derive the same permutation on any machine and numpy
    build.  When the 64-bit keys are pairwise distinct exactly one
    permutation sorts them, so every correct sort returns it, whatever its
    algorithm (numpy's default introsort or a SIMD sort) and however it
    breaks ties; that permutation is also the stable sort's.  Only with a
    repeated key (probability about rows^2 / 2^65) could sorts disagree, and
    then the stable sort, which orders equal keys by position, decides.
    """
    words = keys.words(component, label, rows)
    order = np.argsort(words)
    ranked = np.take(words, order)
    if not np.all(ranked[1:] > ranked[:-1]):
        order = np.argsort(words, kind="stable")
    return order.astype(np.int64, copy=False)


def _combine_into(
    target: Words, other: Words, runs: ColumnRuns, *, subtract: bool = False
) -> Words:
    """``target`` (+ or -) ``other`` per column kind, in place; returns ``target``."""
    return combine_columns(target, other, runs, subtract=subtract, out=target)


def _add_components(
    keys: PairKeys, transport: Transport, own: Words, following: Words, label: bytes, width: int
) -> tuple[Replicated, Replicated]:
    """Bits of r_0 + r_1 + r_2 mod 2^width from this party's component planes.

    As replicated values the summands are the components themselves: this
    party holds summand ``me`` as (own, 0), summand ``me + 1`` as
    (0, following) and summand ``me + 2`` as (0, 0).  Returns the replicated
    sum planes ``(width, words)`` and, for width < 64, the replicated carries
    out of the top bit (carry-save, ripple) as ``(2, words)``; empty for 64.
    Rounds: 1 + (width - 2), or width for width < 64.
    """
    me = keys.party
    zero = np.zeros_like(own)
    summands: list[Replicated] = [(zero, zero)] * PARTIES
    summands[me] = (own, zero)
    summands[(me + 1) % PARTIES] = (zero, following)
    x, y, z = summands
    top = width if width < 64 else width - 1
    # Carry-save layer, every position in one round: maj(x, y, z) = ((x ^ z) & (y ^ z)) ^ z.
    p = (x[0][:top] ^ z[0][:top], x[1][:top] ^ z[1][:top])
    q = (y[0][:top] ^ z[0][:top], y[1][:top] ^ z[1][:top])
    anded = keys.and_replicated(transport, p, q, label + b"/csa")
    saved = (anded[0] ^ z[0][:top], anded[1] ^ z[1][:top])
    # Ripple-carry adder of s = x ^ y ^ z and the carries shifted up by one.
    total = (own ^ following, own ^ following)
    shifted = (np.zeros_like(own), np.zeros_like(own))
    for side in (0, 1):
        total[side][:] = x[side] ^ y[side] ^ z[side]
        shifted[side][1:] = saved[side][: width - 1]
    s_bits = (total[0].copy(), total[1].copy())
    for side in (0, 1):
        total[side][:] ^= shifted[side]
    carry = (np.zeros_like(own[0]), np.zeros_like(own[0]))  # carries into bits 0 and 1 are 0
    for position in range(1, top):
        tag = label + b"/ripple" + str(position).encode()
        left = tuple((s_bits[s][position] ^ carry[s])[None] for s in (0, 1))
        right = tuple((shifted[s][position] ^ carry[s])[None] for s in (0, 1))
        anded_bit = keys.and_replicated(transport, (left[0], left[1]), (right[0], right[1]), tag)
        carry = (anded_bit[0][0] ^ carry[0], anded_bit[1][0] ^ carry[1])
        if position + 1 < width:
            total[0][position + 1] ^= carry[0]
            total[1][position + 1] ^= carry[1]
    if width == 64:
        empty = np.zeros((0, own.shape[1]), dtype=np.uint64)
        return total, (empty, empty.copy())
    return total, (
        np.stack([saved[0][width - 1], carry[0]]),
        np.stack([saved[1][width - 1], carry[1]]),
    )
