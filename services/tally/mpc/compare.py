"""Comparison, equality, bit decomposition and bit conversion (DESIGN §6.1).

All three comparisons start the same way: mask the shared value x with a
fresh edaBit r (known arithmetically and as bits) and open c = x + r.  Since
r is uniform over Z_2^64 (its low bits come from the edaBit, its high bits
from each party's own random share), c is uniform and says nothing about x.
The rest is a binary circuit between the public c and the shared bits of r,
evaluated bit-sliced on ``(bits, words)`` planes.

With a replicated context (three parties, honest majority; :mod:`tally.mpc.replicated`)
no edaBit or daBit is used: x is split into two summands a + b, a held by P0 and b by
P1 (1 round, 8 bytes per element from P2 to P1), and the same circuits run on the
sum a + b of two private inputs instead of c - r: the leaves a_i AND b_i cost one
round of ANDs where the public c made them free, and nothing is opened.
"""

from __future__ import annotations

import numpy as np

from tally.mpc import bits, replicated
from tally.mpc.arithmetic import add_public, open_values
from tally.mpc.boolean import and_words, open_bits, xor_public
from tally.mpc.party import Party
from tally.mpc.ring import Shares, random_ring

ALL_ONES = np.uint64(0xFFFFFFFFFFFFFFFF)


def _masked_open(party: Party, values: Shares, width: int) -> tuple[Shares, Shares]:
    """Open c = x + r for an edaBit r (width low bits) padded with random high bits.

    Returns the public c and this party's XOR shares of the planes of r's low
    ``width`` bits.  Rounds: 1.  Communication: 8 bytes per element per peer.
    """
    rows = values.shape[0]
    arith, planes = party.tuples.edabits(rows, width)
    if width < 64:
        arith = arith + (random_ring(rows) << np.uint64(width))
    (opened,) = open_values(party, [values + arith])
    return opened, planes.reshape(width, bits.word_count(rows))


def bits_to_arithmetic(party: Party, planes: Shares, rows: int) -> Shares:
    """Convert XOR-shared bit planes ``(k, words)`` to arithmetic 0/1 shares ``(k, rows)``.

    Steps, with a daBit s per bit (known as XOR and arithmetic shares):
    (1) open t = b XOR s; (2) b = t + s - 2*t*s, local because t is public.
    Rounds: 1.  Communication: 1 bit per converted bit to each peer.  t is b
    under the one-time pad s.  Replicated: :func:`tally.mpc.replicated.bits_to_arithmetic`
    (2 rounds, no daBit).
    """
    if party.replicated is not None:
        return replicated.bits_to_arithmetic(party.replicated, party.transport, planes, rows)
    planes = planes.reshape(-1, planes.shape[-1]) if planes.ndim != 2 else planes
    count, words = planes.shape
    if rows == 0 or words == 0:
        return np.zeros((count, rows), dtype=np.uint64)
    arith, binary = party.tuples.dabits(count * words * 64)
    (opened,) = open_bits(party, [planes ^ binary.reshape(count, words)])
    public = np.unpackbits(opened.view(np.uint8), axis=1, bitorder="little")[:, :rows]
    public = public.astype(np.uint64)
    mask = arith.reshape(count, words * 64)[:, :rows]
    result = mask - (public * mask << np.uint64(1))
    if party.is_leader:
        result += public
    return result


def _prefix_tree(party: Party, generate: Shares, propagate: Shares) -> Shares:
    """The borrow out of the top of ``k`` positions: log-depth tree of (G, P) pairs.

    Combining a higher pair with a lower one: G = G_hi XOR (P_hi AND G_lo),
    P = P_hi AND P_lo (2 ANDs per node, 1 where P is not needed any more).
    Rounds: ceil(log2 k).
    """
    while generate.shape[0] > 1:
        count = generate.shape[0]
        pairs = count // 2
        low_g, high_g = generate[0 : 2 * pairs : 2], generate[1 : 2 * pairs : 2]
        low_p, high_p = propagate[0 : 2 * pairs : 2], propagate[1 : 2 * pairs : 2]
        last_level = count <= 2
        requests = [(high_p, low_g)] if last_level else [(high_p, low_g), (high_p, low_p)]
        products = and_words(party, requests)
        new_g = high_g ^ products[0]
        new_p = products[1] if not last_level else high_p
        if count % 2:
            new_g = np.concatenate([new_g, generate[-1:]])
            new_p = np.concatenate([new_p, propagate[-1:]])
        generate, propagate = new_g, new_p
    top: Shares = generate[0]
    return top


def _and_tree(party: Party, planes: Shares) -> Shares:
    """AND of all planes, pairwise in ceil(log2 k) rounds (k - 1 ANDs per lane)."""
    while planes.shape[0] > 1:
        pairs = planes.shape[0] // 2
        (product,) = and_words(party, [(planes[0 : 2 * pairs : 2], planes[1 : 2 * pairs : 2])])
        planes = np.concatenate([product, planes[2 * pairs :]]) if planes.shape[0] % 2 else product
    result: Shares = planes[0]
    return result


def less_than_zero(party: Party, values: Shares) -> Shares:
    """[x < 0] for signed x in (-2^62, 2^62), as arithmetic 0/1 shares.

    Steps: (1) open c = x + r for an edaBit r of 64 bits (1 round);
    (2) leaves g_i = NOT c_i AND r_i, p_i = NOT (c_i XOR r_i) for i < 63,
    local since c is public; (3) borrow = [c mod 2^63 < r mod 2^63] by a
    prefix tree, 6 rounds, 2 ANDs per node; (4) sign = c_63 XOR r_63 XOR
    borrow; (5) convert to arithmetic with a daBit (1 round).
    Rounds: 8.  Communication per element to each peer: 8 bytes (c) +
    about 118 AND gates at 2 bits (29.5 bytes) + 1 bit: about 38 bytes.
    Opened: c (uniform, masked by r), the AND gates' d and e (masked by bit
    triples) and t (masked by a daBit); none depends on x.
    Replicated: two summands (1 round), leaves a_i AND b_i (1 round, 63 ANDs), the
    carry tree (6 rounds) and the conversion (2 rounds): 10 rounds, about 60 bytes
    per element to one peer, nothing opened.
    """
    rows = values.shape[0]
    if rows == 0:
        return np.zeros(0, dtype=np.uint64)
    if party.replicated is not None:
        a, b = _summand_planes(party, values, 64)
        sign: Shares = bits_to_arithmetic(party, _sum_bit(party, a, b, 63)[None, :], rows)[0]
        return sign
    opened, r_planes = _masked_open(party, values, 64)
    c_planes = bits.to_planes(opened, 64)
    not_c = ~c_planes[:63]
    generate = r_planes[:63] & not_c
    propagate = xor_public(party, r_planes[:63], not_c)
    borrow = _prefix_tree(party, generate, propagate)
    sign = xor_public(party, r_planes[63] ^ borrow, c_planes[63])
    converted: Shares = bits_to_arithmetic(party, sign[None, :], rows)[0]
    return converted


def equal(party: Party, left: Shares, right: Shares, width: int = 64) -> Shares:
    """[x == y] as arithmetic 0/1 shares, for |x - y| < 2^(width-1) (width 64: any values).

    Steps: (1) open c = (x - y) + r for an edaBit r of ``width`` bits with
    random high bits (1 round); (2) z_i = NOT (c_i XOR r_i) for i < width,
    local; x == y iff every z_i is 1; (3) AND tree, ceil(log2 width) rounds,
    width - 1 ANDs; (4) daBit conversion (1 round).
    Rounds: 2 + ceil(log2 width) (8 for 64 bits).  Communication per element to
    each peer: 8 bytes + (width - 1) * 2 bits + 1 bit (about 24 bytes for 64).
    Opened: c (uniform), AND-gate masks and t (one-time pads).
    Replicated: x - y = a + b with a at P0 and b at P1 (1 round); x == y iff
    a == -b mod 2^width, the same AND tree on NOT(a_i XOR (-b)_i), then the
    conversion (2 rounds); nothing opened.
    """
    rows = left.shape[0]
    if rows == 0:
        return np.zeros(0, dtype=np.uint64)
    if not 1 <= width <= 64:
        raise ValueError("equality width must be 1..64")
    if party.replicated is not None:
        a, b = _summand_planes(party, left - right, width, negate_b=True)
        same = xor_public(party, a ^ b, ALL_ONES)
        flags: Shares = bits_to_arithmetic(party, _and_tree(party, same)[None, :], rows)[0]
        return flags
    opened, r_planes = _masked_open(party, left - right, width)
    c_planes = bits.to_planes(opened, width)
    same = xor_public(party, r_planes, ~c_planes)
    converted: Shares = bits_to_arithmetic(party, _and_tree(party, same)[None, :], rows)[0]
    return converted


def bit_decompose(party: Party, values: Shares, width: int) -> Shares:
    """XOR-shared planes ``(width, words)`` of the low ``width`` bits of x.

    Steps: (1) open c = x + r for an edaBit r (1 round); (2) x mod 2^width is
    c - r mod 2^width: generate g_i = NOT c_i AND r_i and propagate
    p_i = NOT (c_i XOR r_i) locally; (3) every borrow by a Kogge-Stone prefix,
    ceil(log2 width) rounds, 2 ANDs per position per level; (4) bit i =
    c_i XOR r_i XOR borrow_i, local.
    Rounds: 1 + ceil(log2 width).  Communication per element to each peer:
    8 bytes + about width * log2(width) * 4 bits.
    Opened: c (uniform) and AND-gate masks.
    """
    if not 1 <= width <= 64:
        raise ValueError("bit width must be 1..64")
    if party.replicated is not None:
        a, b = _summand_planes(party, values, width)
        (generate,) = and_words(party, [(a, b)])
        total = a ^ b
        total[1:] ^= _kogge_stone(party, generate, total.copy())[:-1]
        total ^= party.replicated.zeros_xor(total.size).reshape(total.shape)
        return total
    opened, r_planes = _masked_open(party, values, width)
    c_planes = bits.to_planes(opened, width)
    not_c = ~c_planes
    generate = _kogge_stone(party, r_planes & not_c, xor_public(party, r_planes, not_c))
    difference = xor_public(party, r_planes, c_planes)
    difference[1:] ^= generate[:-1]
    return difference


def _kogge_stone(party: Party, generate: Shares, propagate: Shares) -> Shares:
    """Every prefix's generate bit (carry or borrow out of positions 0..i), in place.

    Rounds: ceil(log2 k) for k positions, 2 ANDs per position per level.
    """
    step, width = 1, generate.shape[0]
    while step < width:
        products = and_words(
            party, [(propagate[step:], generate[:-step]), (propagate[step:], propagate[:-step])]
        )
        generate = np.concatenate([generate[:step], generate[step:] ^ products[0]])
        propagate = np.concatenate([propagate[:step], products[1]])
        step *= 2
    return generate


def _summand_planes(
    party: Party, values: Shares, width: int, negate_b: bool = False
) -> tuple[Shares, Shares]:
    """Trivial XOR sharings of the low ``width`` bits of x's summands a (P0) and b (P1).

    With ``negate_b``, of -b instead of b.  Rounds: 1 (:func:`replicated.two_summands`).
    """
    if party.replicated is None:
        raise ValueError("two summands need the replicated path")
    a, b = replicated.two_summands(party.replicated, party.transport, values)
    if negate_b:
        b = np.uint64(0) - b
    return (
        replicated.summand_planes(a, width, party.id == 0),
        replicated.summand_planes(b, width, party.id == 1),
    )


def _sum_bit(party: Party, a: Shares, b: Shares, position: int) -> Shares:
    """XOR shares of bit ``position`` of a + b, for planes a, b of at least position + 1 bits.

    The carry into ``position``: leaves g_i = a_i AND b_i (1 round), p_i = a_i XOR b_i,
    then the prefix tree (ceil(log2 position) rounds).
    """
    (generate,) = and_words(party, [(a[:position], b[:position])])
    carry = _prefix_tree(party, generate, a[:position] ^ b[:position])
    top: Shares = a[position] ^ b[position] ^ carry
    return top


def less_than_bounded(party: Party, left: Shares, right: Shares, width: int) -> Shares:
    """[x < y] for x, y in [0, 2^width) (width <= 62), as XOR shares of lane-packed bits.

    Steps: u = x - y + 2^width lies in (0, 2^(width+1)) and x < y iff bit ``width``
    of u is 0.  (1) open c = u + r for an edaBit r of width + 1 bits with random high
    bits (1 round); (2) leaves g_i = NOT c_i AND r_i, p_i = NOT (c_i XOR r_i) for
    i < width, local; (3) borrow = [c mod 2^width < r mod 2^width] by the prefix tree,
    ceil(log2 width) rounds; (4) bit = c_w XOR r_w XOR borrow, and [x < y] = NOT bit.
    Rounds: 1 + ceil(log2 width).  Communication per element to each peer: 8 bytes +
    about 2 * width AND gates at 2 bits.  Opened: c (uniform) and AND-gate masks.
    The result stays XOR-shared (no daBit): the caller opens or converts it.
    Replicated: bit ``width`` of the two summands' sum (1 + 1 + ceil(log2 width)
    rounds), no edaBit.
    """
    if not 1 <= width <= 62:
        raise ValueError("bounded comparison width must be 1..62")
    if left.shape[0] == 0:
        return np.zeros(0, dtype=np.uint64)
    shifted = add_public(party, left - right, np.uint64(1 << width))
    if party.replicated is not None:
        a, b = _summand_planes(party, shifted, width + 1)
        return xor_public(party, _sum_bit(party, a, b, width), ALL_ONES)
    opened, r_planes = _masked_open(party, shifted, width + 1)
    c_planes = bits.to_planes(opened, width + 1)
    not_c = ~c_planes[:width]
    low = r_planes[:width]
    borrow = _prefix_tree(party, low & not_c, xor_public(party, low, not_c))
    return xor_public(party, r_planes[width] ^ borrow, ~c_planes[width])


def less_than_words(party: Party, left: Shares, right: Shares) -> Shares:
    """[x < y] for XOR-shared bit planes ``(k, words)``, least significant plane first.

    Steps: (1) leaves g_i = NOT x_i AND y_i (1 round, k ANDs) and p_i = NOT (x_i XOR y_i)
    (local); (2) the prefix tree gives the borrow out of the top, which is [x < y]
    (ceil(log2 k) rounds, about 2k ANDs).  Rounds: 1 + ceil(log2 k).  Communication
    per element to each peer: about 3k AND gates at 2 bits; no edaBit.  Opened: only
    AND-gate masks.  Returns XOR shares of the lane-packed result bits.
    """
    if left.shape != right.shape or left.ndim != 2 or left.shape[0] == 0:
        raise ValueError("less_than_words needs two (bits, words) plane arrays of one shape")
    (generate,) = and_words(party, [(xor_public(party, left, ALL_ONES), right)])
    propagate = xor_public(party, left ^ right, ALL_ONES)
    return _prefix_tree(party, generate, propagate)
