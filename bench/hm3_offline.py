"""The offline phase of ``bench/run.py CASE --tuples hm3|ot``: the tuple plan, generated in the run.

Each of the three party processes calls :func:`generate` with the tuple plan its
warm-up run recorded (every batch the case asks for, in order).  The plan is pooled
by kind, as a job's reservation asks the tuple-service for it (``triples``,
``bit_triples``, ``dabits``, ``edabits:<k>``, ``input_masks``, and the shuffle
correlations one by one), and generated with the tuple-service's own code: fresh
pairwise keys (:func:`~tally.mpc.offline.agree_keys`) under its PRF (AES-128-CTR,
:class:`~tally.common.prf.AesCtrPrf`, its default), then each kind in chunks of
its default chunk size through :func:`~tally.tuples.generation.hm3_chunk` with its
chunk labels, over the same socket transport the online phase uses (daBits and
edaBits talk; the other kinds are computed locally from the keys).  Shuffle
correlations are derived as the tuple-service derives them when the engine fetches
one (:meth:`~tally.mpc.offline.Hm3Generator.shuffle` under the reservation's label),
here ahead of the online phase.

What the tuple-service adds and this does not: its chunk store (the sections are
kept in memory instead of its blob store) and the HTTP read of a reservation.  The
online phase reads the sections as the execution service's prefetched reservation
does (:func:`~tally.mpc.offline.layout.from_arrays` on slices, no copy of the
``uint64`` sections; the binary sections of daBits and edaBits repacked into planes).

The bill, per kind: tuples made, bytes of this party's shares (the tuple-service's
stored layout; a shuffle's encoded correlation), bytes this party sent and rounds it
took while generating them, and seconds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from tally.common.prf import AesCtrPrf
from tally.mpc.offline import Hm3Generator, agree_keys
from tally.mpc.offline.layout import from_arrays, parse_kind
from tally.mpc.offline.ot import OtGenerator, keep_freed_buffers
from tally.mpc.offline.wire import encode_shuffle_parts
from tally.mpc.ring import Shares
from tally.mpc.transport import Transport
from tally.mpc.tuples import ShuffleShare, TupleReuseError, TupleSource
from tally.tuples.generation import chunk_label, hm3_chunk
from tally.tuples.ot_group import Ed25519Group
from tally.tuples.ot_hash import AesBlockHash
from tally.tuples.settings import TuplesSettings

CHUNK = int(TuplesSettings.model_fields["chunk_size"].default)
"""Tuples per generated chunk: the tuple-service's default."""
SHUFFLE = "shuffle"
Plan = list[tuple[str, tuple[Any, ...]]]


@dataclass
class KindBill:
    """One kind's offline cost at one party."""

    count: int = 0
    """Tuples (words of 64 AND gates for ``bit_triples``; correlations for ``shuffle``)."""
    bytes: int = 0
    """Bytes of this party's shares."""
    sent: int = 0
    """Bytes this party sent generating them."""
    rounds: int = 0
    seconds: float = 0.0
    rows: int = 0
    """Rows permuted, summed over the correlations (``shuffle`` only)."""

    def line(self) -> dict[str, int | float]:
        """The JSON figures (``rows`` for shuffles only)."""
        figures = dict(vars(self))
        if not self.rows:
            del figures["rows"]
        return figures


def pooled(plan: Plan) -> tuple[dict[str, int], list[tuple[int, str]]]:
    """Tuples per tuple-service kind, and the shuffles (rows, column kinds) in request order."""
    counts: dict[str, int] = {}
    shuffles: list[tuple[int, str]] = []
    for kind, params in plan:
        if kind == SHUFFLE:
            shuffles.append((int(params[0]), str(params[1])))
            continue
        name = f"edabits:{int(params[1])}" if kind == "edabits" else kind
        parse_kind(name)  # refuses a kind the tuple-service does not know
        counts[name] = counts.get(name, 0) + int(params[0])
    return counts, shuffles


@dataclass
class PooledSource(TupleSource):
    """One party's generated pools, handed out in request order (a cursor per kind)."""

    party: int
    parties: int
    sections: dict[str, list[NDArray[np.generic]]]
    shuffles: list[ShuffleShare]
    cursors: dict[str, int] = field(default_factory=dict)
    generation_seconds: float = 0.0

    def _take(self, name: str, count: int) -> tuple[Shares, ...]:
        offset = self.cursors.get(name, 0)
        sections = self.sections.get(name)
        if sections is None or offset + count > len(sections[0]):
            raise TupleReuseError(f"{name} tuples [{offset}, {offset + count}) were not generated")
        self.cursors[name] = offset + count
        views = [section[offset : offset + count] for section in sections]
        return from_arrays(parse_kind(name), views, copy=False)

    def triples(self, count: int) -> tuple[Shares, Shares, Shares]:
        a, b, c = self._take("triples", count)
        return a, b, c

    def bit_triples(self, words: int) -> tuple[Shares, Shares, Shares]:
        a, b, c = self._take("bit_triples", words)
        return a, b, c

    def dabits(self, count: int) -> tuple[Shares, Shares]:
        arith, binary = self._take("dabits", count)
        return arith, binary

    def edabits(self, count: int, width: int) -> tuple[Shares, Shares]:
        arith, planes = self._take(f"edabits:{width}", count)
        return arith, planes

    def shuffle(self, rows: int, kinds: str) -> ShuffleShare:
        index = self.cursors.get(SHUFFLE, 0)
        if index >= len(self.shuffles):
            raise TupleReuseError(f"shuffle correlation {index} was not generated")
        self.cursors[SHUFFLE] = index + 1
        correlation = self.shuffles[index]
        self.shuffles[index] = []  # handed out once
        return correlation

    def input_masks(self, count: int) -> Shares:
        (masks,) = self._take("input_masks", count)
        return masks


@dataclass
class Offline:
    """What :func:`generate` made at one party: the source, the bill, the totals."""

    source: PooledSource
    bill: dict[str, KindBill]
    seconds: float
    sent: int
    rounds: int


def generate(transport: Transport, plan: Plan, session: str, tuples: str = "hm3") -> Offline:
    """This party's shares of everything ``plan`` needs, generated over ``transport`` with
    hm3 (three parties) or ot (any number: :class:`~tally.mpc.offline.ot.OtGenerator`).

    Runs at every party at once (the same plan everywhere).  hm3 rounds: 1 for the
    keys, then per chunk 1 (daBits), k + 1 (edaBits(k < 64)) or 63 (edaBits(64)).  ot:
    2 for the base OTs (the ``keys`` line), then 2 per extension batch.
    """
    started = time.perf_counter()
    sent, rounds = transport.bytes_sent, transport.rounds
    generator: Hm3Generator | OtGenerator
    if tuples == "ot":
        keep_freed_buffers()
        generator = OtGenerator(
            transport, AesCtrPrf(), AesBlockHash(), session.encode(), group=Ed25519Group()
        )
    else:
        generator = Hm3Generator(agree_keys(transport, AesCtrPrf()), transport)
    bill = {"keys": KindBill(1, 0, transport.bytes_sent - sent, transport.rounds - rounds)}
    bill["keys"].seconds = time.perf_counter() - started
    counts, shuffles = pooled(plan)
    sections: dict[str, list[NDArray[np.generic]]] = {}
    chunk_id = 0
    for name, count in sorted(counts.items()):
        kind = parse_kind(name)
        entry = bill[name] = KindBill(count, count * kind.tuple_bytes)
        before = (time.perf_counter(), transport.bytes_sent, transport.rounds)
        arrays = [np.empty(count, dtype) for dtype in kind.sections]
        for first in range(0, count, CHUNK):
            size = min(CHUNK, count - first)
            chunk = hm3_chunk(generator, kind, chunk_label(session, chunk_id), size)
            chunk_id += 1
            for array, data in zip(arrays, chunk, strict=True):
                array[first : first + size] = np.frombuffer(data, array.dtype)
        sections[name] = arrays
        _account(entry, transport, before)
    correlations: list[ShuffleShare] = []
    if shuffles:
        entry = bill[SHUFFLE] = KindBill(len(shuffles))
        before = (time.perf_counter(), transport.bytes_sent, transport.rounds)
        for index, (rows, kinds) in enumerate(shuffles):
            label = f"{session}/reservation/bench/shuffle/{index}".encode()
            correlation = generator.shuffle(label, rows, kinds)
            correlations.append(correlation)
            entry.bytes += encode_shuffle_parts(correlation)[1]
            entry.rows += rows
        _account(entry, transport, before)
    source = PooledSource(transport.party, transport.parties, sections, correlations)
    return Offline(
        source,
        bill,
        time.perf_counter() - started,
        transport.bytes_sent - sent,
        transport.rounds - rounds,
    )


def _account(entry: KindBill, transport: Transport, before: tuple[float, int, int]) -> None:
    entry.seconds = time.perf_counter() - before[0]
    entry.sent = transport.bytes_sent - before[1]
    entry.rounds = transport.rounds - before[2]
