"""Oblivious stable quicksort over shuffled unique keys (DESIGN §6.3).

Steps, for m rows sorted by keys of total width L (most significant key first):

1. Unique keys: the row index i (b = bit length of m - 1 bits) is appended as the
   lowest bits, so that no two rows compare equal and ties keep their input order
   (the sort is stable).  A descending key enters as 2^w - 1 - v (arithmetic) or with
   its w bits flipped (XOR words); the index bits are never flipped.
2. One secret shuffle of (comparison key, payload) with a fresh permutation pi
   that no coalition of n - 1 parties knows (:func:`tally.mpc.shuffle.shuffle_columns`,
   n rounds, 8 bytes per row and column to each peer).
3. Quicksort level by level, every segment of the level at once: the first row of
   each segment of two or more rows is its pivot; ONE batched comparison call per
   level computes [key < pivot key] for every other row of every such segment, and
   the result bits are opened (1 round, 1 bit per comparison).  Every party then
   moves the rows locally and identically: the rows below the pivot (in their
   current order), the pivot, the rows above it.  The pivot becomes a segment of
   one row (finished); the two sides are the next level's segments.  Repeat until
   every segment has one row.  The payload is not touched until the end: the rows'
   final positions are public after the last level, and step 4 is a local gather.
4. Output: the shuffled payload in the final order (local).

Comparators (``comparator=``):

* ``boolean``, the default (:func:`tally.mpc.compare.less_than_words`): the keys' bits
  and the index bits travel as XOR words (arithmetic keys are bit-decomposed once first,
  1 + ceil(log2 w) rounds); per comparison of K = L + b bits about 3K ANDs (the leaves
  x_i < y_i, 1 round, then the borrow tree, ceil(log2 K) rounds) and no edaBit.
  Any width (several words for L + b > 64, e.g. 62-bit keys).
* ``arithmetic`` (:func:`tally.mpc.compare.less_than_bounded`): every key an arithmetic
  :class:`ValueKey` and K <= 62: keys and index packed locally in one ring element, no
  bit decomposition; per comparison an edaBit of K + 1 bits, 8 opened bytes (1 round)
  and about 2K ANDs (ceil(log2 K) rounds).  As fast online with dealer tuples; with
  hm3 tuples the edaBits cost more than they save (docs/engine.md), so it is opt-in.

Rounds: n (shuffle) + per level 2 + ceil(log2 K) (+1 per opening of 2^16 elements or
more with three parties, :mod:`tally.mpc.opening`).  Levels: the height of a random
binary search tree, about 4.3 ln m on average (40-50 at 2^17; it depends on the
shuffle, not on the data).  Comparisons: on average 2 m ln m - 2.8 m (about 20.7 per
row at 2^17).  Bytes per row to each peer, boolean comparator: about 20.7 * 3K / 4
plus 8 per shuffled column (measured 1,279 bytes per row per party with three parties
at 2^17, 32-bit keys; radix sort 2,905).  Tuples come in fixed-shape chunks
(:class:`ChunkedSource`), so the sequence of requests does not depend on the shuffle.

What is opened, and why it reveals nothing: (a) inside the comparisons, only values
masked by fresh edaBits or bit triples (uniform); (b) the comparison bits.  After the
shuffle, row j of the shuffled table holds the rank sigma(j) of its unique key, where
sigma = rank o pi^-1 is a uniformly random permutation of 0..m-1 for any input,
because pi is uniform and unknown to any n - 1 parties and the keys are distinct.
Quicksort with first-row pivots is a deterministic function of sigma alone: every
opened bit is [sigma(j) < sigma(pivot)], so the whole transcript of opened bits, the
number of levels and the final positions (which are sigma itself) are functions of a
uniformly random permutation, independent of the data.  Nothing about the keys, the
number of duplicates or the input order is revealed; only m, which is public anyway.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from tally.mpc import bits
from tally.mpc.arithmetic import add_public, public_to_shares
from tally.mpc.boolean import open_bits, xor_public
from tally.mpc.compare import less_than_bounded, less_than_words
from tally.mpc.party import Party
from tally.mpc.ring import Shares
from tally.mpc.shuffle import shuffle_columns
from tally.mpc.sort import SortKey, key_from_values
from tally.mpc.tuples import ShuffleShare, TupleSource

ARITHMETIC_MAX_BITS = 62
"""Widest packed comparison key (keys + index) the arithmetic comparator handles."""

Indices = NDArray[np.int64]


@dataclass
class ValueKey:
    """A sort key as arithmetic shares of an unsigned value v in [0, 2^width).

    Free to build (no protocol): a quicksort packs such keys with local arithmetic.
    :meth:`as_sort_key` bit-decomposes it for a radix sort or the boolean comparator,
    once: the result is kept in ``decomposed`` for later sorts by the same key.
    """

    values: Shares
    width: int
    descending: bool = False
    decomposed: SortKey | None = None

    def as_sort_key(self, party: Party) -> SortKey:
        """The key as XOR-shared packed bits (bit decomposition: 1 + ceil(log2 width) rounds)."""
        if self.decomposed is None:
            self.decomposed = key_from_values(party, self.values, self.width, 0, self.descending)
        return self.decomposed


AnyKey = SortKey | ValueKey


def index_bits(rows: int) -> int:
    """Bits of the row index appended to make keys unique."""
    return max(1, (rows - 1).bit_length())


def comparator_for(keys: Sequence[AnyKey], rows: int) -> str:
    """The default comparator: ``boolean`` (measured cheaper with hm3 tuples; docs/engine.md)."""
    return "boolean"


def arithmetic_fits(keys: Sequence[AnyKey], rows: int) -> bool:
    """Whether every key is a :class:`ValueKey` and keys + index fit in 62 bits."""
    total = sum(k.width for k in keys) + index_bits(rows)
    return all(isinstance(k, ValueKey) for k in keys) and total <= ARITHMETIC_MAX_BITS


def _packed_value(party: Party, keys: Sequence[AnyKey], rows: int) -> Shares:
    """sum_j key'_j * 2^(shift_j) + index: one arithmetic comparison key (local)."""
    packed = public_to_shares(party, np.arange(rows, dtype=np.uint64))
    shift = index_bits(rows)
    for key in reversed(keys):
        assert isinstance(key, ValueKey)  # noqa: S101 - arithmetic_fits checked it
        value = key.values
        if key.descending:
            value = add_public(party, np.uint64(0) - value, np.uint64((1 << key.width) - 1))
        packed = packed + (value << np.uint64(shift))
        shift += key.width
    return packed


def _packed_words(party: Party, keys: Sequence[AnyKey], rows: int) -> list[tuple[Shares, int]]:
    """XOR words of the keys' bits then the index bits, most significant first, <= 64 each."""
    parts: list[tuple[Shares, int]] = []
    for key in keys:
        sort_key = key.as_sort_key(party) if isinstance(key, ValueKey) else key
        words = sort_key.words
        if sort_key.descending:
            words = xor_public(party, words, np.uint64((1 << sort_key.width) - 1))
        parts.append((words, sort_key.width))
    index = xor_public(party, np.zeros(rows, np.uint64), np.arange(rows, dtype=np.uint64))
    parts.append((index, index_bits(rows)))
    merged: list[tuple[Shares, int]] = []
    for words, width in parts:
        if merged and merged[-1][1] + width <= 64:
            high, high_width = merged[-1]
            merged[-1] = ((high << np.uint64(width)) | words, high_width + width)
        else:
            merged.append((words, width))
    return merged


def tree_gates(positions: int) -> int:
    """AND gates per lane of :func:`tally.mpc.compare.less_than_bounded`'s borrow tree."""
    gates = 0
    while positions > 1:
        gates += positions // 2 * (1 if positions <= 2 else 2)
        positions = (positions + 1) // 2
    return gates


class ChunkedSource(TupleSource):
    """Serves a quicksort's comparisons from batches of planned shapes, all kinds together.

    How many comparisons a quicksort makes depends on the random shuffle (not on the
    data), so asking the tuple source for exactly each level's batch would make the
    sequence of requests differ from run to run.  Here the first request of each kind
    is a budget fixed by the row count and key width alone (:func:`comparison_budget`:
    the mean number of comparisons plus 1.5 m, which a run exceeds rarely); only then
    come chunks of a fixed smaller shape, all kinds refilled together.  So a recorded
    plan or a reservation stays valid (almost always exactly, else up to its chunks).
    edaBits are handed out in whole 64-lane words.
    """

    def __init__(
        self, inner: TupleSource, width: int, first: tuple[int, int], chunk: tuple[int, int]
    ) -> None:
        self.inner = inner
        self.party, self.parties = inner.party, inner.parties
        self.width = width
        self._next, self._chunk = first, chunk
        self._arith = np.zeros(0, np.uint64)
        self._planes = np.zeros((width, 0), np.uint64)
        self._triples = [np.zeros(0, np.uint64) for _ in range(3)]

    def _refill(self) -> None:
        edabits, words = self._next
        self._next = self._chunk
        if edabits:
            arith, planes = self.inner.edabits(edabits, self.width)
            self._arith = np.concatenate([self._arith, arith]) if self._arith.size else arith
            self._planes = (
                np.concatenate([self._planes, planes], axis=1) if self._planes.size else planes
            )
        fresh = self.inner.bit_triples(words)
        if self._triples[0].size:
            pairs = zip(self._triples, fresh, strict=True)
            self._triples = [np.concatenate([old, new]) for old, new in pairs]
        else:
            self._triples = list(fresh)

    def edabits(self, count: int, width: int) -> tuple[Shares, Shares]:
        if width != self.width or not self._chunk[0]:
            raise ValueError(f"this chunked source holds edaBits of {self.width} bits only")
        words = bits.word_count(count)
        while self._planes.shape[1] < words:
            self._refill()
        arith, planes = self._arith[:count], self._planes[:, :words]
        self._arith, self._planes = self._arith[words * 64 :], self._planes[:, words:]
        return arith, planes

    def bit_triples(self, words: int) -> tuple[Shares, Shares, Shares]:
        while self._triples[0].shape[0] < words:
            self._refill()
        taken = [t[:words] for t in self._triples]
        self._triples = [t[words:] for t in self._triples]
        return taken[0], taken[1], taken[2]

    def triples(self, count: int) -> tuple[Shares, Shares, Shares]:
        raise ValueError("a quicksort's comparisons use no Beaver triples")

    def dabits(self, count: int) -> tuple[Shares, Shares]:
        raise ValueError("a quicksort's comparisons use no daBits")

    def shuffle(self, rows: int, kinds: str) -> ShuffleShare:
        raise ValueError("a quicksort shuffles before its comparisons")

    def input_masks(self, count: int) -> Shares:
        raise ValueError("a quicksort's comparisons use no input masks")


def comparison_budget(rows: int) -> tuple[int, int]:
    """(comparisons, levels) planned for a quicksort of ``rows`` rows.

    Comparisons: the mean 2(m + 1)H_m - 4m plus 1.5 m (the standard deviation is about
    0.65 m); levels: 4.4 ln m + 8 (the height of a random binary search tree is about
    4.31 ln m - 1.95 ln ln m, with a variance that stays bounded).
    """
    if rows < 2:
        return 0, 0
    harmonic = math.log(rows) + 0.5772156649 + 1 / (2 * rows)
    mean = 2 * (rows + 1) * harmonic - 4 * rows
    return math.ceil(mean + 1.5 * rows), math.ceil(4.4 * math.log(rows)) + 8


def _comparison_party(party: Party, comparator: str, width: int, rows: int) -> Party:
    """The party with a :class:`ChunkedSource`: the planned budget, then chunks of m/8.

    On the replicated path the comparisons use no tuples: the party itself.
    """
    if party.replicated is not None:
        return party
    comparisons, levels = comparison_budget(rows)
    if comparator == "arithmetic":
        gates, lanes = tree_gates(width), 64
    else:
        gates, lanes = width + tree_gates(width), 0
    words = bits.word_count(comparisons) + levels  # each level rounds up to whole words
    chunk = bits.word_count(max(rows // 8, 64))
    first = (lanes and (words * 64), words * gates)
    source = ChunkedSource(party.tuples, width + 1, first, (lanes and chunk * 64, chunk * gates))
    return Party(party.id, party.transport, source)


@dataclass
class _Segments:
    """The active segments of a level (two or more rows each): first positions and sizes."""

    starts: Indices
    sizes: Indices


def _level_rows(segments: _Segments) -> tuple[Indices, Indices, Indices]:
    """For every non-pivot row of every segment: its segment, position and pivot position."""
    others = segments.sizes - 1
    segment_of = np.repeat(np.arange(others.shape[0]), others)
    first = np.cumsum(others) - others
    offset = np.arange(segment_of.shape[0]) - first[segment_of] + 1
    pivots = segments.starts[segment_of]
    return segment_of, pivots + offset, pivots


def _rearrange(
    order: Indices, segments: _Segments, below: NDArray[np.bool_]
) -> tuple[Indices, _Segments]:
    """Move every segment's rows to (below pivot, pivot, above pivot), keeping their order."""
    segment_of, positions, pivots = _level_rows(segments)
    count = segments.starts.shape[0]
    low = below.astype(np.int64)
    lows = np.bincount(segment_of, weights=low, minlength=count).astype(np.int64)
    before_low = np.cumsum(low) - low
    before_high = np.cumsum(1 - low) - (1 - low)
    low_base = np.cumsum(lows) - lows
    high_base = np.cumsum(segments.sizes - 1 - lows) - (segments.sizes - 1 - lows)
    rank_low = before_low - low_base[segment_of]
    rank_high = before_high - high_base[segment_of]
    pivot_at = segments.starts + lows
    targets = np.where(below, pivots + rank_low, pivot_at[segment_of] + 1 + rank_high).astype(
        np.int64
    )
    moved = order.copy()
    moved[targets] = order[positions]
    moved[pivot_at] = order[segments.starts]
    highs = segments.sizes - 1 - lows
    starts = np.concatenate([segments.starts, pivot_at + 1])
    sizes = np.concatenate([lows, highs])
    keep = sizes >= 2
    return moved, _Segments(starts[keep], sizes[keep])


def _compare(
    party: Party,
    comparator: str,
    value: Shares | None,
    words: list[tuple[Shares, int]],
    width: int,
    rows: Indices,
    pivots: Indices,
) -> Shares:
    """XOR-shared lane-packed bits [key(rows) < key(pivots)]: one batched comparison."""
    if comparator == "arithmetic":
        assert value is not None  # noqa: S101 - set with the comparator
        return less_than_bounded(party, value[rows], value[pivots], width)
    left = np.concatenate([bits.to_planes(w[rows], k) for w, k in reversed(words)])
    right = np.concatenate([bits.to_planes(w[pivots], k) for w, k in reversed(words)])
    return less_than_words(party, left, right)


def quicksort(
    party: Party,
    keys: Sequence[AnyKey],
    payload: Shares,
    payload_kinds: str | None = None,
    comparator: str | None = None,
) -> Shares:
    """Stably sort the rows of ``payload`` (``(rows, width)``) by ``keys`` (most significant first).

    ``comparator``: ``arithmetic`` or ``boolean``; by default :func:`comparator_for`.
    Returns the sorted payload.  See the module docstring for steps, cost and what is
    opened (only bits that depend on a uniformly random permutation).
    """
    payload = np.ascontiguousarray(payload, dtype=np.uint64)
    rows, width = payload.shape
    kinds = payload_kinds or "a" * width
    if len(kinds) != width:
        raise ValueError("one kind per payload column")
    if rows <= 1 or not keys:
        return payload.copy()
    comparator = comparator or comparator_for(keys, rows)
    total = sum(k.width for k in keys) + index_bits(rows)
    if comparator == "arithmetic":
        if not arithmetic_fits(keys, rows):
            raise ValueError("the arithmetic comparator needs value keys of at most 62 bits")
        key_columns = [_packed_value(party, keys, rows)]
        key_kinds = "a"
        words: list[tuple[Shares, int]] = []
    elif comparator == "boolean":
        words = _packed_words(party, keys, rows)
        key_columns = [w for w, _ in words]
        key_kinds = "x" * len(words)
    else:
        raise ValueError(f"unknown comparator {comparator!r}: arithmetic or boolean")
    joined = np.column_stack([*key_columns, payload])
    shuffled = shuffle_columns(party, joined, key_kinds + kinds)
    count = len(key_columns)
    value = np.ascontiguousarray(shuffled[:, 0]) if comparator == "arithmetic" else None
    words = [(np.ascontiguousarray(shuffled[:, i]), k) for i, (_, k) in enumerate(words)]
    order = np.arange(rows, dtype=np.int64)
    comparing = _comparison_party(party, comparator, total, rows)
    segments = _Segments(np.zeros(1, np.int64), np.array([rows], np.int64))
    while segments.starts.shape[0]:
        _, positions, pivots = _level_rows(segments)
        less = _compare(comparing, comparator, value, words, total, order[positions], order[pivots])
        (opened,) = open_bits(party, [less])
        below = bits.unpack_lanes(opened, positions.shape[0]).astype(bool)
        order, segments = _rearrange(order, segments, below)
    return np.ascontiguousarray(shuffled[order, count:])
