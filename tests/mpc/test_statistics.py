"""Statistical tests: what comparisons open is uniform and does not depend on the inputs.

A recording transport captures every array a party sends.  The value opened in a
round is the sum (or XOR) of what all parties sent in it, which for a broadcast
is what each party learns.  With a seeded dealer the transcript is deterministic,
so the chi-square bounds below are checked on fixed data; they are generous (about
six standard deviations) so a change of seed would not make them flaky either.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator, Mapping

import numpy as np
import pytest
from numpy.typing import NDArray

from tally.mpc.compare import equal, less_than_zero
from tally.mpc.party import Party
from tally.mpc.ring import encode_int, split
from tally.mpc.simulate import run_parties
from tally.mpc.transport import InProcessHub, InProcessTransport, Message

LARGEST = 2**62 - 1
ROWS = 4096
PARTY_COUNTS = pytest.mark.parametrize("parties", [2, 3, 5])

Transcript = dict[int, list[NDArray[np.uint64]]]
"""Per party, the first array it sent in each round (the one it broadcast)."""


class RecordingTransport(InProcessTransport):
    """An in-process transport that keeps a copy of the first array sent in every round."""

    def __init__(
        self, hub: InProcessHub, party: int, transcript: Transcript, lock: threading.Lock
    ) -> None:
        super().__init__(hub, party)
        self._transcript = transcript
        self._lock = lock

    def _exchange(
        self, outgoing: Mapping[int, Message], expect: list[int]
    ) -> dict[int, list[NDArray[np.generic]]]:
        sent = next(iter(outgoing.values()), [np.zeros(0, np.uint64)])
        with self._lock:
            self._transcript.setdefault(self.party, []).append(
                np.array(sent[0], copy=True).view(np.uint64)
            )
        return super()._exchange(outgoing, expect)


@pytest.fixture
def record(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[], Transcript]]:
    """Make every InProcessHub hand out recording transports; yields a fresh-transcript maker."""
    transcripts: list[Transcript] = []
    lock = threading.Lock()

    def recording_transport(hub: InProcessHub, party: int) -> InProcessTransport:
        return RecordingTransport(hub, party, transcripts[-1], lock)

    monkeypatch.setattr(InProcessHub, "transport", recording_transport)

    def start() -> Transcript:
        transcripts.append({})
        return transcripts[-1]

    yield start


def opened_in_round(transcript: Transcript, round_index: int, xor: bool = False) -> np.ndarray:
    """What a broadcast round revealed: the sum (or XOR) of every party's message."""
    messages = [transcript[party][round_index] for party in sorted(transcript)]
    total = messages[0].copy()
    for message in messages[1:]:
        total = total ^ message if xor else total + message
    return total


def chi_square(samples: np.ndarray, bins: int) -> float:
    counts = np.bincount(samples.astype(np.int64), minlength=bins)
    expected = samples.size / bins
    return float(((counts - expected) ** 2 / expected).sum())


def chi_square_bound(degrees: int) -> float:
    """Mean plus six standard deviations of a chi-square with ``degrees`` degrees of freedom."""
    return degrees + 6.0 * math.sqrt(2.0 * degrees)


def top_bits(values: np.ndarray, count: int) -> np.ndarray:
    return values >> np.uint64(64 - count)


def low_byte(values: np.ndarray) -> np.ndarray:
    return values & np.uint64(0xFF)


def assert_uniform(values: np.ndarray, label: str) -> None:
    top = chi_square(top_bits(values, 4), 16)
    low = chi_square(low_byte(values), 256)
    assert top < chi_square_bound(15), f"{label}: top 4 bits not uniform (chi2={top:.1f})"
    assert low < chi_square_bound(255), f"{label}: low byte not uniform (chi2={low:.1f})"
    top_bit = float((values >> np.uint64(63)).mean())
    assert abs(top_bit - 0.5) < 6 * 0.5 / math.sqrt(values.size), f"{label}: top bit {top_bit}"


def assert_same_distribution(first: np.ndarray, second: np.ndarray, label: str) -> None:
    """Two-sample chi-square on the top 4 bits and on the low byte."""
    for name, bins, reduce in (
        ("top 4 bits", 16, lambda v: top_bits(v, 4)),
        ("low byte", 256, low_byte),
    ):
        left = np.bincount(reduce(first).astype(np.int64), minlength=bins).astype(float)
        right = np.bincount(reduce(second).astype(np.int64), minlength=bins).astype(float)
        occupied = (left + right) > 0
        statistic = float(((left - right)[occupied] ** 2 / (left + right)[occupied]).sum())
        assert statistic < chi_square_bound(bins - 1), f"{label}: {name} differ ({statistic:.1f})"


def opened_mask(
    record: Callable[[], Transcript],
    parties: int,
    seed: int,
    protocol: Callable[[Party, np.ndarray, np.ndarray], np.ndarray],
    left: np.ndarray,
    right: np.ndarray,
) -> tuple[np.ndarray, Transcript]:
    """Run ``protocol`` on shared inputs; return the value opened in its first round."""
    shared_left = split(encode_int(left), parties, np.random.default_rng(1))
    shared_right = split(encode_int(right), parties, np.random.default_rng(2))
    transcript = record()
    run_parties(parties, lambda p: protocol(p, shared_left[p.id], shared_right[p.id]), seed=seed)
    return opened_in_round(transcript, 0), transcript


def sign_of(party: Party, left: np.ndarray, _: np.ndarray) -> np.ndarray:
    return less_than_zero(party, left)


def equality_of(party: Party, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    return equal(party, left, right)


PROTOCOLS = pytest.mark.parametrize(
    "protocol", [sign_of, equality_of], ids=["less_than_zero", "equal"]
)


@PARTY_COUNTS
@PROTOCOLS
def test_opened_mask_is_uniform_for_a_constant_input(
    record: Callable[[], Transcript],
    parties: int,
    protocol: Callable[[Party, np.ndarray, np.ndarray], np.ndarray],
) -> None:
    fives = np.full(ROWS, 5, dtype=np.int64)
    opened, _ = opened_mask(record, parties, 31, protocol, fives, fives)
    assert opened.shape == (ROWS,)
    assert_uniform(opened, f"{protocol.__name__} with x = 5")


@PARTY_COUNTS
@PROTOCOLS
def test_opened_mask_does_not_depend_on_the_input(
    record: Callable[[], Transcript],
    parties: int,
    protocol: Callable[[Party, np.ndarray, np.ndarray], np.ndarray],
) -> None:
    fives = np.full(ROWS, 5, dtype=np.int64)
    most_negative = np.full(ROWS, -LARGEST, dtype=np.int64)
    largest = np.full(ROWS, LARGEST, dtype=np.int64)
    # independent dealers (different seeds), so the two samples are independent
    small, _ = opened_mask(record, parties, 41, protocol, fives, fives)
    extreme, _ = opened_mask(record, parties, 42, protocol, most_negative, largest)
    assert_uniform(extreme, f"{protocol.__name__} with x = -(2^62 - 1)")
    assert_same_distribution(small, extreme, protocol.__name__)


@PARTY_COUNTS
def test_small_width_equality_opens_uniform_low_bits(
    record: Callable[[], Transcript], parties: int
) -> None:
    """With a 16-bit edaBit the low 16 bits of c come from the (seeded) dealer alone."""
    fives = np.full(ROWS, 5, dtype=np.int64)
    shared = split(encode_int(fives), parties, np.random.default_rng(3))
    zeros = np.zeros(ROWS, dtype=np.uint64)
    transcript = record()
    run_parties(parties, lambda p: equal(p, shared[p.id], zeros, 16), seed=51)
    opened = opened_in_round(transcript, 0)
    assert chi_square(low_byte(opened), 256) < chi_square_bound(255)
    second_byte = (opened >> np.uint64(8)) & np.uint64(0xFF)
    assert chi_square(second_byte, 256) < chi_square_bound(255)


@PARTY_COUNTS
@PROTOCOLS
def test_every_later_opening_is_balanced(
    record: Callable[[], Transcript],
    parties: int,
    protocol: Callable[[Party, np.ndarray, np.ndarray], np.ndarray],
) -> None:
    """The AND-gate openings and the daBit opening of the last round are one-time padded."""
    fives = np.full(ROWS, 5, dtype=np.int64)
    _, transcript = opened_mask(record, parties, 61, protocol, fives, fives)
    rounds = len(transcript[0])
    assert rounds == 8
    for round_index in range(1, rounds):
        opened = opened_in_round(transcript, round_index, xor=True)
        bits = np.unpackbits(opened.view(np.uint8))
        share = float(bits.mean())
        assert abs(share - 0.5) < 6 * 0.5 / math.sqrt(bits.size), (round_index, share)
