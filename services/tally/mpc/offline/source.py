"""``Hm3Source``: a ``TupleSource`` that generates every batch with ``hm3`` when it is asked for.

The k-th request is the same at all three parties (they run the same
program), so the k-th batch label ``session/k/kind`` is too; each party's
generator derives its own shares of that batch from the pairwise keys, and
talks to its peers only for daBits and edaBits.  The transport may be the
online protocol's own (generation rounds then interleave with protocol
rounds in the same order at every party) or a separate one.
"""

from __future__ import annotations

import time

from tally.mpc.offline.hm3 import Hm3Generator
from tally.mpc.offline.prf import Prf, ShakePrf
from tally.mpc.offline.replicated import PairKeys, agree_keys
from tally.mpc.ring import Shares
from tally.mpc.transport import Transport
from tally.mpc.tuples import ShuffleShare, TupleSource


class Hm3Source(TupleSource):
    """One party's on-demand ``hm3`` tuples; keys are agreed over ``transport`` unless given."""

    def __init__(
        self,
        transport: Transport,
        prf: Prf | None = None,
        keys: PairKeys | None = None,
        session: bytes = b"on-demand",
    ) -> None:
        self.party = transport.party
        self.parties = transport.parties
        self.generation_seconds = 0.0
        started = time.perf_counter()
        self.keys = keys if keys is not None else agree_keys(transport, prf or ShakePrf())
        self.generation_seconds += time.perf_counter() - started
        self.generator = Hm3Generator(self.keys, transport)
        self._session = session
        self._batch = 0
        self.requests: list[tuple[str, tuple[int | str, ...]]] = []
        """Every batch kind and size asked for so far, in order (a tuple plan)."""

    def _label(self, kind: str, params: tuple[int | str, ...]) -> bytes:
        self.requests.append((kind, params))
        label = b"%s/%d/%s" % (self._session, self._batch, kind.encode())
        self._batch += 1
        return label

    def _timed(self, started: float) -> None:
        self.generation_seconds += time.perf_counter() - started

    def triples(self, count: int) -> tuple[Shares, Shares, Shares]:
        started = time.perf_counter()
        out = self.generator.triples(self._label("triples", (count,)), count)
        self._timed(started)
        return out

    def bit_triples(self, words: int) -> tuple[Shares, Shares, Shares]:
        started = time.perf_counter()
        out = self.generator.bit_triples(self._label("bit_triples", (words,)), words)
        self._timed(started)
        return out

    def dabits(self, count: int) -> tuple[Shares, Shares]:
        started = time.perf_counter()
        out = self.generator.dabits(self._label("dabits", (count,)), count)
        self._timed(started)
        return out

    def edabits(self, count: int, width: int) -> tuple[Shares, Shares]:
        if not 1 <= width <= 64:
            raise ValueError("edaBit width must be 1..64")
        started = time.perf_counter()
        out = self.generator.edabits(self._label("edabits", (count, width)), count, width)
        self._timed(started)
        return out

    def shuffle(self, rows: int, kinds: str) -> ShuffleShare:
        started = time.perf_counter()
        out = self.generator.shuffle(self._label("shuffle", (rows, kinds)), rows, kinds)
        self._timed(started)
        return out

    def input_masks(self, count: int) -> Shares:
        started = time.perf_counter()
        out = self.generator.input_masks(self._label("input_masks", (count,)), count)
        self._timed(started)
        return out
