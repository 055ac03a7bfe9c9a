"""``ReservedSource``: a ``TupleSource`` reading a job's reservation from the local tuple-service.

Every kind has a cursor (the next tuple offset of the reservation).  A
request for ``count`` tuples reads ``[cursor, cursor + count)`` as one
binary stream and advances the cursor; the tuple-service refuses any range
that starts below what it already served, so a tuple is never used twice,
even by a worker that restarts.  A resumed worker passes the cursors its
peers agreed on (``cursors``) and continues from there.

Shuffle correlations are numbered the same way and fetched one at a time.
The HTTP reader uses the standard library only; anything with the same two
methods (``read``, ``shuffle``) will do.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from tally.mpc.offline.layout import Kind, from_sections, parse_kind
from tally.mpc.offline.wire import decode_shuffle
from tally.mpc.ring import Shares
from tally.mpc.tuples import ShuffleShare, TupleReuseError, TupleSource

SHUFFLE = "shuffle"


Body = bytes | NDArray[np.uint8]
"""What a reader returns: the bytes of a response, or a ``uint8`` array read into."""


def _bytes_of(body: Body) -> memoryview:
    return memoryview(body if isinstance(body, bytes) else body.data).cast("B")


class TupleReader(Protocol):
    """Where a reservation's bytes come from."""

    def read(self, kind: str, offset: int, count: int) -> Body:
        """This party's sections of tuples [offset, offset + count) of ``kind``."""

    def shuffle(self, index: int, rows: int, kinds: str) -> Body:
        """This party's shuffle correlation number ``index``, encoded."""


class TupleServiceError(RuntimeError):
    """The tuple-service refused or failed a read; the message carries its reason."""


class HttpTupleReader:
    """Reads a reservation over the tuple-service's REST API (standard library HTTP)."""

    def __init__(
        self, base_url: str, reservation_id: str, token: str = "", timeout: float = 300.0
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.reservation_id = reservation_id
        self.token = token
        self.timeout = timeout

    def _get(self, path: str) -> bytes:
        request = urllib.request.Request(f"{self.base_url}{path}")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                data: bytes = response.read()
                return data
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")
            if error.code == 409 and "tuples_reused" in detail:
                raise TupleReuseError(detail) from error
            raise TupleServiceError(f"tuple-service answered {error.code}: {detail}") from error
        except urllib.error.URLError as error:
            raise TupleServiceError(f"tuple-service unreachable: {error.reason}") from error

    def read(self, kind: str, offset: int, count: int) -> bytes:
        return self._get(
            f"/v1/reservations/{self.reservation_id}/tuples/{kind}?offset={offset}&count={count}"
        )

    def shuffle(self, index: int, rows: int, kinds: str) -> bytes:
        return self._get(
            f"/v1/reservations/{self.reservation_id}/shuffles/{index}?rows={rows}&kinds={kinds}"
        )


class ReservedSource(TupleSource):
    """This party's tuples from a reservation, read in protocol order."""

    def __init__(
        self,
        party: int,
        parties: int,
        reader: TupleReader,
        cursors: Mapping[str, int] | None = None,
    ) -> None:
        self.party = party
        self.parties = parties
        self.reader = reader
        self.cursors: dict[str, int] = dict(cursors or {})
        """Next unread offset per kind (``edabits:64``, ``shuffle``, ...): checkpoint these."""
        self.generation_seconds = 0.0

    def _read(self, name: str, count: int) -> tuple[Shares, ...]:
        kind: Kind = parse_kind(name)
        offset = self.cursors.get(name, 0)
        started = time.perf_counter()
        data: Body = self.reader.read(name, offset, count) if count else b""
        self.generation_seconds += time.perf_counter() - started
        expected = count * kind.tuple_bytes
        if len(data) != expected:
            raise TupleServiceError(f"expected {expected} bytes of {name}, got {len(data)}")
        sections, position, whole = [], 0, _bytes_of(data)
        for dtype in kind.sections:
            size = count * dtype.itemsize
            sections.append(whole[position : position + size])
            position += size
        self.cursors[name] = offset + count
        return from_sections(kind, sections, count)

    def triples(self, count: int) -> tuple[Shares, Shares, Shares]:
        a, b, c = self._read("triples", count)
        return a, b, c

    def bit_triples(self, words: int) -> tuple[Shares, Shares, Shares]:
        a, b, c = self._read("bit_triples", words)
        return a, b, c

    def dabits(self, count: int) -> tuple[Shares, Shares]:
        arith, binary = self._read("dabits", count)
        return arith, binary

    def edabits(self, count: int, width: int) -> tuple[Shares, Shares]:
        if not 1 <= width <= 64:
            raise ValueError("edaBit width must be 1..64")
        arith, planes = self._read(f"edabits:{width}", count)
        return arith, planes

    def shuffle(self, rows: int, kinds: str) -> ShuffleShare:
        index = self.cursors.get(SHUFFLE, 0)
        started = time.perf_counter()
        data = self.reader.shuffle(index, rows, kinds)
        self.generation_seconds += time.perf_counter() - started
        self.cursors[SHUFFLE] = index + 1
        return decode_shuffle(_bytes_of(data))

    def input_masks(self, count: int) -> Shares:
        (masks,) = self._read("input_masks", count)
        return masks
