"""Offline material ("tuples", DESIGN §4): the ``TupleSource`` interface and the local dealer.

Every protocol asks its party's ``TupleSource`` for material in the order the
protocol runs; because all parties run the same program, the k-th request at
every party is for the same tuples, and each party receives its own share.

:class:`Dealer` samples every tuple in full and splits it (development and
tests; a genuinely independent dealer).  It is deterministic from ``seed``
when one is given (tests, benchmarks with one process per party: each process
builds its own ``Dealer`` with the same seed and keeps only its share), and
draws from the OS CSPRNG otherwise.  Consumption is sequential: the k-th
batch is handed to each party once; asking for a batch again raises
:class:`TupleReuseError`.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import cast

import numpy as np
from numpy.typing import NDArray

from tally.mpc import bits
from tally.mpc.ring import Shares, random_ring

Permutation = NDArray[np.int64]


class TupleReuseError(RuntimeError):
    """A tuple would be handed out a second time."""


@dataclass(frozen=True)
class PermuterShare:
    """Party j's part of one permutation step of a shuffle: its permutation and Δ_j."""

    permutation: Permutation
    delta: Shares


@dataclass(frozen=True)
class HelperShare:
    """A party i != j's part of party j's permutation step: the mask a_i and the output b_i."""

    mask: Shares
    output: Shares


ShuffleShare = list[PermuterShare | HelperShare]
"""One entry per permuting party j = 0 .. n-1, in the order they permute."""


class TupleSource(ABC):
    """Hands out this party's shares of offline material, in protocol order."""

    party: int
    parties: int
    generation_seconds: float = 0.0
    """Time this party spent producing material on the critical path (0 for a pool)."""

    @abstractmethod
    def triples(self, count: int) -> tuple[Shares, Shares, Shares]:
        """Beaver triples a, b, c = a*b over Z_2^64, each of shape ``(count,)``."""

    @abstractmethod
    def bit_triples(self, words: int) -> tuple[Shares, Shares, Shares]:
        """Packed AND triples: XOR shares of words a, b and c = a & b."""

    @abstractmethod
    def dabits(self, count: int) -> tuple[Shares, Shares]:
        """Random bits r: arithmetic shares ``(count,)`` and XOR shares of the packed plane."""

    @abstractmethod
    def edabits(self, count: int, width: int) -> tuple[Shares, Shares]:
        """Random r < 2^width.

        Returns arithmetic shares ``(count,)`` and XOR shares of the ``(width, words)`` planes.
        """

    @abstractmethod
    def shuffle(self, rows: int, kinds: str) -> ShuffleShare:
        """A permutation correlation per party for ``rows`` rows; ``kinds[c]`` is 'a' or 'x'."""

    @abstractmethod
    def input_masks(self, count: int) -> Shares:
        """This party's shares of random input masks."""


def _xor_split(secret: Shares, parties: int, rng: np.random.Generator | None) -> list[Shares]:
    shares = [random_ring(secret.shape, rng) for _ in range(parties - 1)]
    last = secret.copy()
    for share in shares:
        last ^= share
    return [*shares, last]


def _add_split(secret: Shares, parties: int, rng: np.random.Generator | None) -> list[Shares]:
    shares = [random_ring(secret.shape, rng) for _ in range(parties - 1)]
    last = secret.copy()
    for share in shares:
        last -= share
    return [*shares, last]


def _permutation(rows: int, rng: np.random.Generator | None) -> Permutation:
    if rng is not None:
        return rng.permutation(rows).astype(np.int64)
    keys = random_ring(rows)
    return np.argsort(keys, kind="stable").astype(np.int64)


class _Generator:
    """Samples full tuples and splits them into every party's shares."""

    def __init__(self, parties: int) -> None:
        self.parties = parties

    def triples(self, rng: np.random.Generator | None, count: int) -> list[tuple[Shares, ...]]:
        a, b = random_ring(count, rng), random_ring(count, rng)
        parts = [_add_split(v, self.parties, rng) for v in (a, b, a * b)]
        return [tuple(part[p] for part in parts) for p in range(self.parties)]

    def bit_triples(self, rng: np.random.Generator | None, words: int) -> list[tuple[Shares, ...]]:
        a, b = random_ring(words, rng), random_ring(words, rng)
        parts = [_xor_split(v, self.parties, rng) for v in (a, b, a & b)]
        return [tuple(part[p] for part in parts) for p in range(self.parties)]

    def dabits(self, rng: np.random.Generator | None, count: int) -> list[tuple[Shares, ...]]:
        value = random_ring(count, rng) & np.uint64(1)
        arith = _add_split(value, self.parties, rng)
        binary = _xor_split(bits.pack_lanes(value), self.parties, rng)
        return [(arith[p], binary[p]) for p in range(self.parties)]

    def edabits(
        self, rng: np.random.Generator | None, count: int, width: int
    ) -> list[tuple[Shares, ...]]:
        value = random_ring(count, rng)
        if width < 64:
            value &= np.uint64((1 << width) - 1)
        arith = _add_split(value, self.parties, rng)
        binary = _xor_split(bits.to_planes(value, width), self.parties, rng)
        return [(arith[p], binary[p]) for p in range(self.parties)]

    def shuffle(self, rng: np.random.Generator | None, rows: int, kinds: str) -> list[ShuffleShare]:
        out: list[ShuffleShare] = [[] for _ in range(self.parties)]
        xor_columns = np.array([k == "x" for k in kinds], dtype=bool)
        for permuter in range(self.parties):
            permutation = _permutation(rows, rng)
            mask_total = np.zeros((rows, len(kinds)), dtype=np.uint64)
            output_total = np.zeros((rows, len(kinds)), dtype=np.uint64)
            for helper in range(self.parties):
                if helper == permuter:
                    continue
                mask = random_ring((rows, len(kinds)), rng)
                output = random_ring((rows, len(kinds)), rng)
                mask_total = np.where(xor_columns, mask_total ^ mask, mask_total + mask)
                output_total = np.where(xor_columns, output_total ^ output, output_total + output)
                out[helper].append(HelperShare(mask, output))
            moved = mask_total[permutation]
            delta = np.where(xor_columns, moved ^ output_total, moved + output_total)
            out[permuter].append(PermuterShare(permutation, delta))
        return out

    def input_masks(self, rng: np.random.Generator | None, count: int) -> list[Shares]:
        return _add_split(random_ring(count, rng), self.parties, rng)


class Dealer:
    """Samples complete tuples and serves each party its shares, each batch once.

    All parties of one process share a ``Dealer`` (``dealer.source(p)``); with
    one process per party, each process builds a ``Dealer`` with the same seed
    and takes its own source.  Seeded dealers are for tests and benchmarks only:
    anyone with the seed can rebuild every share.
    """

    def __init__(
        self, parties: int, seed: int | None = None, only_party: int | None = None
    ) -> None:
        if parties < 1:
            raise ValueError("a dealer needs at least one party")
        if only_party is not None and seed is None:
            raise ValueError("a dealer that serves one party of several needs the common seed")
        self.parties = parties
        self.seed = seed
        self.only_party = only_party
        self._generator = _Generator(parties)
        self._lock = threading.Lock()
        self._pending: dict[int, tuple[str, tuple[int | str, ...], list[object], set[int]]] = {}
        self._cursor = [0] * parties
        self.requests: list[tuple[str, tuple[int | str, ...]]] = []
        """Every batch kind and size asked for so far, in order (a plan for :meth:`prefetch`)."""

    def source(self, party: int) -> DealerSource:
        """The ``TupleSource`` through which ``party`` consumes this dealer's batches."""
        if not 0 <= party < self.parties:
            raise ValueError(f"party {party} is not in 0..{self.parties - 1}")
        if self.only_party is not None and party != self.only_party:
            raise ValueError(f"this dealer serves party {self.only_party} only")
        return DealerSource(self, party)

    def cursor(self, party: int) -> int:
        """Number of batches ``party`` has consumed."""
        return self._cursor[party]

    def take(self, party: int, batch: int, kind: str, params: tuple[int | str, ...]) -> object:
        """Hand ``party`` its share of batch number ``batch``; refuses anything not next in line."""
        if self.only_party is not None and party != self.only_party:
            raise ValueError(f"this dealer serves party {self.only_party} only")
        with self._lock:
            if batch < self._cursor[party]:
                raise TupleReuseError(
                    f"batch {batch} was already handed to party {party}; tuples are never reused"
                )
            if batch > self._cursor[party]:
                raise TupleReuseError(
                    f"party {party} asked for batch {batch} before batch {self._cursor[party]}"
                )
            entry = self._pending.get(batch)
            if entry is None:
                entry = (kind, params, self._generate(batch, kind, params), set())
                self._pending[batch] = entry
            if batch == len(self.requests):
                self.requests.append((kind, params))
            if (entry[0], entry[1]) != (kind, params):
                raise TupleReuseError(
                    f"party {party} asked batch {batch} for {kind}{params}; "
                    f"another party asked for {entry[0]}{entry[1]}: the parties are out of step"
                )
            shares, served = entry[2], entry[3]
            served.add(party)
            self._cursor[party] += 1
            share = shares[party]
            shares[party] = None
            if len(served) == self.parties or self.only_party is not None:
                del self._pending[batch]
            return share

    def prefetch(self, plan: list[tuple[str, tuple[int | str, ...]]]) -> None:
        """Generate the next batches ahead of time, following a plan of (kind, params).

        The online phase then only hands out stored shares.  A dealer serving
        one party keeps only that party's shares.
        """
        with self._lock:
            start = max(self._cursor)
            for offset, (kind, params) in enumerate(plan):
                batch = start + offset
                if batch in self._pending:
                    continue
                shares = self._generate(batch, kind, params)
                if self.only_party is not None:
                    shares = [s if p == self.only_party else None for p, s in enumerate(shares)]
                self._pending[batch] = (kind, params, shares, set())

    def _generate(self, batch: int, kind: str, params: tuple[int | str, ...]) -> list[object]:
        rng = None
        if self.seed is not None:
            rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, batch])))
        produce = getattr(self._generator, kind)
        return list(produce(rng, *params))


class DealerSource(TupleSource):
    """One party's view of a :class:`Dealer`."""

    def __init__(self, dealer: Dealer, party: int) -> None:
        self.dealer = dealer
        self.party = party
        self.parties = dealer.parties
        self.generation_seconds = 0.0

    def _take(self, kind: str, *params: int | str) -> object:
        started = time.perf_counter()
        try:
            return self.dealer.take(self.party, self.dealer.cursor(self.party), kind, params)
        finally:
            self.generation_seconds += time.perf_counter() - started

    def triples(self, count: int) -> tuple[Shares, Shares, Shares]:
        a, b, c = cast(tuple[Shares, Shares, Shares], self._take("triples", count))
        return a, b, c

    def bit_triples(self, words: int) -> tuple[Shares, Shares, Shares]:
        a, b, c = cast(tuple[Shares, Shares, Shares], self._take("bit_triples", words))
        return a, b, c

    def dabits(self, count: int) -> tuple[Shares, Shares]:
        arith, binary = cast(tuple[Shares, Shares], self._take("dabits", count))
        return arith, binary

    def edabits(self, count: int, width: int) -> tuple[Shares, Shares]:
        if not 1 <= width <= 64:
            raise ValueError("edaBit width must be 1..64")
        arith, binary = cast(tuple[Shares, Shares], self._take("edabits", count, width))
        return arith, binary

    def shuffle(self, rows: int, kinds: str) -> ShuffleShare:
        if set(kinds) - {"a", "x"}:
            raise ValueError("shuffle column kinds are 'a' (additive) or 'x' (XOR)")
        share: ShuffleShare = self._take("shuffle", rows, kinds)  # type: ignore[assignment]
        return share

    def input_masks(self, count: int) -> Shares:
        share: Shares = self._take("input_masks", count)  # type: ignore[assignment]
        return share
