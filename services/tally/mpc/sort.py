"""Oblivious stable radix sort (DESIGN §6.3).

Keys are decomposed into bits once (``compare.bit_decompose``); each party
then holds XOR shares of every key packed row-major in ``uint64`` words.  Then
one pass per key bit, least significant first:

1. take bit i of the packed key words (local) and convert it to an arithmetic
   0/1 share with a daBit (1 round, 1 bit per row);
2. compute every row's destination under a stable partition by that bit
   (``bit_destinations``): zeros keep their order in front, ones behind; the
   counts are local prefix sums of shares, the selection one Beaver product
   (1 round, 16 bytes per row per peer);
3. apply the destinations to the key words and all payload columns with
   ``apply_destinations``: shuffle them together with a fresh secret
   permutation pi (n rounds), open the shuffled destinations (1 round) and
   move every row to its opened position locally.

What is opened, and why it leaks nothing: in step 3 the opened vector is
pi(dest), a permutation composed with a uniformly random permutation that no
coalition of n-1 parties knows, hence itself a uniformly random permutation,
independent of the data.  Everything else opened is masked by fresh tuples.

Rounds per key bit: n + 3.  Communication per row and key bit, to each peer:
1 bit (daBit) + 16 bytes (product) + 8 bytes (opened destination) + 8 bytes
per carried column in the shuffle.  (These are broadcast openings; from 2^16 rows on
with three or more parties each opening takes one more round and a third fewer bytes,
see :mod:`tally.mpc.opening`.)  Stable by construction (LSD radix).

The quicksort over shuffled unique keys (the other approach in DESIGN §6.3) is
:mod:`tally.mpc.quicksort`; :mod:`tally.mpc.sorting` picks one of the two by key width
and row count (measurements in docs/engine.md): this radix sort wins for narrow keys,
see :data:`tally.mpc.sorting.QUICK_FROM_BITS`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tally.mpc import bits
from tally.mpc.arithmetic import add_public, multiply, open_values
from tally.mpc.compare import bit_decompose, bits_to_arithmetic
from tally.mpc.party import Party
from tally.mpc.ring import MINUS_ONE, Shares
from tally.mpc.shuffle import shuffle_columns


class ProtocolError(RuntimeError):
    """Opened values are inconsistent: a bug or a party that deviated from the protocol."""


@dataclass
class SortKey:
    """One key of a sort: XOR shares of its bits packed row-major, and how many bits count."""

    words: Shares
    width: int
    descending: bool = False


def key_from_values(
    party: Party, values: Shares, width: int, offset: int = 0, descending: bool = False
) -> SortKey:
    """Bit-decompose ``values + offset`` (which must lie in [0, 2^width)) into a sort key."""
    shifted = add_public(party, values, np.uint64(offset)) if offset else values
    planes = bit_decompose(party, shifted, width)
    return SortKey(bits.from_planes(planes, values.shape[0]), width, descending)


def merge_keys(keys: Sequence[SortKey]) -> list[SortKey]:
    """Pack adjacent keys of the same direction into one word while they fit in 64 bits."""
    merged: list[SortKey] = []
    for key in keys:
        high = merged[-1] if merged else None
        if high and high.descending == key.descending and high.width + key.width <= 64:
            words = (high.words << np.uint64(key.width)) | key.words
            merged[-1] = SortKey(words, high.width + key.width, key.descending)
        else:
            merged.append(key)
    return merged


def key_from_bit(values: Shares, descending: bool = False) -> SortKey:
    """A key from values already known to be bits held as XOR shares in bit 0 of each word."""
    return SortKey(values, 1, descending)


def bit_destinations(party: Party, bit: Shares) -> Shares:
    """Destination of every row in the stable partition by a 0/1 column (zeros first).

    dest = (prefix count of zeros) - 1 for a zero, (all zeros + prefix count of
    ones) - 1 for a one; computed as d0 + b * (d1 - d0).  Rounds: 1.
    """
    zeros = add_public(party, np.uint64(0) - bit, np.uint64(1))
    before_zero = np.cumsum(zeros, dtype=np.uint64)
    before_one = np.cumsum(bit, dtype=np.uint64)
    total_zeros = before_zero[-1] if before_zero.shape[0] else np.uint64(0)
    dest_zero = add_public(party, before_zero, MINUS_ONE)
    dest_one = add_public(party, before_one + total_zeros, MINUS_ONE)
    (choice,) = multiply(party, [(bit, dest_one - dest_zero)])
    return dest_zero + choice


def apply_destinations(party: Party, destinations: Shares, columns: Shares, kinds: str) -> Shares:
    """Move row r of ``columns`` (``(rows, width)``) to position ``destinations[r]``, obliviously.

    Shuffle (destinations, columns) together, open the shuffled destinations,
    and scatter locally.  Rounds: n + 1.
    """
    rows = destinations.shape[0]
    joined = np.empty((rows, 1 + columns.shape[1]), dtype=np.uint64)
    joined[:, 0] = destinations
    joined[:, 1:] = columns
    shuffled = shuffle_columns(party, joined, "a" + kinds)
    (opened,) = open_values(party, [np.ascontiguousarray(shuffled[:, 0])])
    positions = opened.astype(np.int64)
    if rows and (positions.min() < 0 or positions.max() >= rows):
        raise ProtocolError("opened sort destinations are out of range")
    out = np.empty_like(shuffled[:, 1:])
    out[positions] = shuffled[:, 1:]
    seen = np.zeros(rows, dtype=bool)
    seen[positions] = True
    if not seen.all():
        raise ProtocolError("opened sort destinations are not a permutation")
    return out


def digit_destinations(party: Party, low: Shares, high: Shares) -> Shares:
    """Destinations of the stable partition by a 2-bit digit v = low + 2 * high (radix 4).

    Steps: (1) p = low * high (1 round); (2) one-hot e_v, linear in
    (1, low, high, p), and D_v = offset_v + prefix count of e_v - 1, local;
    (3) dest = D_0 + sum_{v>0} e_v * (D_v - D_0), three products (1 round).
    Rounds: 2.  Communication: 4 products per row, as two radix-2 passes, but
    only one shuffle and one opening for both bits.
    """
    (both,) = multiply(party, [(low, high)])
    one_hot = [
        add_public(party, both - low - high, np.uint64(1)),
        low - both,
        high - both,
        both,
    ]
    offset = np.zeros(1, dtype=np.uint64)
    places = []
    for indicator in one_hot:
        before = np.cumsum(indicator, dtype=np.uint64)
        places.append(add_public(party, before + offset, MINUS_ONE))
        offset += before[-1:]
    chosen = multiply(party, [(one_hot[v], places[v] - places[0]) for v in (1, 2, 3)])
    return places[0] + chosen[0] + chosen[1] + chosen[2]


def _digit_bits(party: Party, key: SortKey, position: int, step: int, rows: int) -> list[Shares]:
    """Bits position .. position+step-1 of a key as arithmetic 0/1 shares (1 round)."""
    planes = np.stack(
        [
            bits.pack_lanes((key.words >> np.uint64(position + j)) & np.uint64(1))
            for j in range(step)
        ]
    )
    converted = bits_to_arithmetic(party, planes, rows)
    if key.descending:
        converted = add_public(party, np.uint64(0) - converted, np.uint64(1))
    return [converted[j] for j in range(step)]


@dataclass
class RadixProgress:
    """A radix sort between two passes (what a checkpoint of a running sort holds).

    ``pending``: the keys not yet finished, most significant first (their XOR words
    already in the current row order); ``position``: the bits of the last pending key
    done so far; ``payload``: the carried columns in the current row order.
    """

    pending: list[SortKey]
    position: int
    payload: Shares
    kinds: str

    @property
    def done(self) -> bool:
        """Whether every key bit has been sorted on."""
        return not self.pending


def radix_start(
    keys: Sequence[SortKey], payload: Shares, payload_kinds: str | None = None
) -> RadixProgress:
    """A radix sort of ``payload`` (``(rows, width)``) by ``keys``, before its first pass."""
    payload = np.ascontiguousarray(payload, dtype=np.uint64)
    kinds = payload_kinds or "a" * payload.shape[1]
    pending = list(keys) if payload.shape[0] > 1 else []
    return RadixProgress(pending, 0, payload, kinds)


def radix_passes(widths: Sequence[int], rows: int) -> int:
    """How many passes a radix sort of ``rows`` rows by keys of these widths takes."""
    return sum((width + 1) // 2 for width in widths) if rows > 1 else 0


def radix_pass(party: Party, progress: RadixProgress) -> RadixProgress:
    """One pass: the next one or two bits of the last pending key.  Rounds: n + 4 or n + 3."""
    key = progress.pending[-1]
    rows = progress.payload.shape[0]
    step = min(2, key.width - progress.position)
    digit = _digit_bits(party, key, progress.position, step, rows)
    if step == 2:
        destinations = digit_destinations(party, digit[0], digit[1])
    else:
        destinations = bit_destinations(party, digit[0])
    position = progress.position + step
    finished = position >= key.width
    carried = progress.pending[:-1] if finished else progress.pending
    key_columns = [k.words for k in carried]
    payload = progress.payload
    columns = np.column_stack([*key_columns, payload]) if key_columns else payload
    moved = apply_destinations(party, destinations, columns, "x" * len(carried) + progress.kinds)
    pending = [
        SortKey(np.ascontiguousarray(moved[:, i]), k.width, k.descending)
        for i, k in enumerate(carried)
    ]
    return RadixProgress(
        pending,
        0 if finished else position,
        np.ascontiguousarray(moved[:, len(carried) :]),
        progress.kinds,
    )


def radix_sort(
    party: Party, keys: Sequence[SortKey], payload: Shares, payload_kinds: str | None = None
) -> Shares:
    """Stably sort the rows of ``payload`` (``(rows, width)``) by ``keys`` (most significant first).

    Least significant digits first, two key bits per pass (radix 4; a single
    bit for the last pass of an odd-width key).  Each pass carries the keys
    not yet finished (as XOR words) and the payload.  Returns the sorted payload.
    The passes are :func:`radix_pass`, so a caller may also run them one at a time
    (e.g. to checkpoint between them).
    """
    progress = radix_start(keys, payload, payload_kinds)
    while not progress.done:
        progress = radix_pass(party, progress)
    return progress.payload
