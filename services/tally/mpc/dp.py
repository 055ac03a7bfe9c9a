"""Differential privacy on outputs: the binomial mechanism inside MPC (DESIGN §6.5).

What a release is.  An aggregate x (a count or a clipped sum, in the ring's raw
units: fixed-point values are scaled by 2^f) whose sensitivity is Δ raw units is
released as

    y = (round(x / u) + N) * u,   u = 2^t the smallest power of two with u >= Δ,
    N = sum_{j<m} r_j - m/2  over m shared uniformly random bits r_j,

all inside MPC: the rounding is a bit decomposition of x (:func:`round_to_unit`),
the bits r_j are the arithmetic halves of daBits (summing shares is local), and
nothing is opened before N is added.  No party knows N.

Why this holds.  Removing or adding one privacy unit changes x by at most Δ <= u,
so round(x / u) changes by at most 1: the mechanism is the binomial mechanism on
an integer query of sensitivity 1, followed by a public scaling (post-processing).
Every bit of the output below t is zero for every input, so no low bit carries the
exact value (the flaw of scaling integer noise by 2^f without rounding: the low f
bits of the sum passed through unnoised).  Because the query is reduced to
sensitivity 1 whatever Δ is, the noise costs m daBits per value with m depending
on (epsilon, delta) only, never on Δ.

Choosing m.  :func:`exact_delta` computes the exact delta of Binomial(m, 1/2) noise
for a shift by one at a given epsilon: the hockey-stick divergence
sum_y max(0, P(y) - e^epsilon P(y - 1)) (both directions are equal by the symmetry
of the binomial).  :func:`trials_for` takes the smallest even m whose exact delta is
at most the target.  This is tight, not the loose bound m >= 64 ln(2/delta) /
epsilon^2 of Dwork, Kenthapadi, McSherry, Mironov and Naor ("Our Data, Ourselves",
EUROCRYPT 2006), which needs about 8x more coins at epsilon = 1, delta = 1e-6.

Sensitivities (add/remove one privacy unit holding at most k rows): a count has
Δ = k; a sum clipped to [lo, hi] has Δ = max(|lo|, |hi|) * k.  Clipping happens
inside MPC (:func:`clip`), so Δ holds whatever the inputs are.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tally.mpc.arithmetic import add_public, multiply
from tally.mpc.compare import bit_decompose, bits_to_arithmetic, less_than_zero
from tally.mpc.party import Party
from tally.mpc.ring import Shares

MAX_TRIALS = 1 << 22
"""Larger m would mean epsilon or delta too small to be useful (and 4M daBits a value)."""

MAX_ABS_CLIP = float(1 << 40)
"""Clip bounds beyond this (in the column's units) leave no room in the ring for sums."""


@dataclass(frozen=True)
class DP:
    """Parameters of differentially private releases.

    ``clip``: column -> (lo, hi) in the column's units; every summed column needs one.
    ``unit`` and ``max_contributions``: rows sharing a value of the privacy-unit column
    are one person; at most ``max_contributions`` of them are kept (inside MPC).
    Without ``unit`` every row is a person (k = 1).
    """

    epsilon: float
    delta: float
    clip: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    unit: str | None = None
    max_contributions: int = 1

    def __post_init__(self) -> None:
        if not (isinstance(self.epsilon, (int, float)) and 0 < self.epsilon <= 10):
            raise ValueError("dp epsilon must lie in (0, 10]")
        if not (isinstance(self.delta, (int, float)) and 0 < self.delta < 1):
            raise ValueError("dp delta must lie strictly between 0 and 1")
        if not (isinstance(self.max_contributions, int) and 1 <= self.max_contributions <= 1000):
            raise ValueError("dp max_contributions must be an integer in 1..1000")
        bounds: dict[str, tuple[float, float]] = {}
        for column, pair in dict(self.clip).items():
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
                raise ValueError(f"dp clip for {column!r} must be a pair [lo, hi]")
            lo, hi = float(pair[0]), float(pair[1])
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                raise ValueError(f"dp clip for {column!r} needs finite lo < hi")
            if max(abs(lo), abs(hi)) > MAX_ABS_CLIP:
                raise ValueError(f"dp clip bounds for {column!r} must lie within ±2^40")
            bounds[column] = (lo, hi)
        object.__setattr__(self, "clip", bounds)
        self.trials  # noqa: B018 - refuses an (epsilon, delta) that needs too many coins

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> DP:
        """From a job's ``dp`` settings, with a clear error for anything unknown."""
        if "sensitivity" in params:
            raise ValueError(
                "dp sensitivity is not set by the analyst: it follows from the clip bounds "
                "(dp.clip = {column: [lo, hi]}) and the privacy unit's max_contributions"
            )
        unknown = set(params) - {"epsilon", "delta", "clip", "unit", "max_contributions"}
        if unknown:
            raise ValueError(f"unknown dp settings: {sorted(unknown)}")
        if "epsilon" not in params or "delta" not in params:
            raise ValueError("dp needs epsilon and delta")
        clip = params.get("clip") or {}
        if not isinstance(clip, Mapping):
            raise ValueError("dp clip must map columns to [lo, hi]")
        return cls(
            float(params["epsilon"]),
            float(params["delta"]),
            {str(k): (v[0], v[1]) for k, v in clip.items()},
            params.get("unit"),
            int(params.get("max_contributions", 1)),
        )

    @property
    def trials(self) -> int:
        """m: the number of shared coins per noisy value (even)."""
        return trials_for(self.epsilon, self.delta)


def exact_delta(trials: int, epsilon: float) -> float:
    """The exact delta at ``epsilon`` of Binomial(trials, 1/2) noise on a sensitivity-1 query."""
    m = trials
    y = np.arange(1, m + 1, dtype=np.float64)
    log_choose = np.concatenate([[0.0], np.cumsum(np.log((m - y + 1) / y))])
    log_p = log_choose - m * math.log(2)
    p = np.exp(log_p)
    shifted = np.concatenate([[0.0], p])  # P(y - 1) for y = 0..m+1
    own = np.concatenate([p, [0.0]])
    return float(np.maximum(0.0, own - math.exp(epsilon) * shifted).sum())


@functools.lru_cache(maxsize=256)
def trials_for(epsilon: float, delta: float) -> int:
    """The smallest even m whose exact delta at ``epsilon`` is at most ``delta``."""
    high = 2
    while exact_delta(high, epsilon) > delta:
        high *= 2
        if high > MAX_TRIALS:
            raise ValueError(
                f"dp epsilon={epsilon}, delta={delta} would need more than {MAX_TRIALS} "
                "coins per value: raise epsilon or delta"
            )
    low = high // 2  # exact_delta(low) > delta unless low == 1
    while high - low > 2:
        middle = (low + high) // 2
        middle += middle % 2
        if middle >= high:
            break
        if exact_delta(middle, epsilon) <= delta:
            high = middle
        else:
            low = middle
    return high


def noise_shift(sensitivity: int) -> int:
    """t with 2^t the smallest power of two >= ``sensitivity`` (raw units, >= 1)."""
    if sensitivity < 1:
        raise ValueError("a sensitivity is at least one raw unit")
    return (sensitivity - 1).bit_length()


def binomial_noise(party: Party, count: int, trials: int) -> Shares:
    """Shares of ``count`` independent values sum_{j<m} r_j - m/2 (m even; rounded up)."""
    trials += trials % 2
    arith, _ = party.tuples.dabits(count * trials)
    total = arith.reshape(count, trials).sum(axis=1, dtype=np.uint64)
    return add_public(party, total, np.uint64(-(trials // 2) % (1 << 64)))


def round_to_unit(party: Party, values: Shares, shift: int) -> Shares:
    """Shares of round(x / 2^shift) (halves up) for signed x in (-2^61, 2^61).

    x + 2^62 + 2^(shift-1) is non-negative and below 2^63, so its 63 low bits are all
    of it: bit-decompose them (1 + 6 rounds), convert bits shift..62 to arithmetic
    with daBits (1 round) and weigh them; subtract 2^(62 - shift).
    Opened: the masked value and AND/daBit masks only.
    """
    if shift == 0:
        return values
    rows = values.shape[0]
    offset = (1 << 62) + (1 << (shift - 1))
    planes = bit_decompose(party, add_public(party, values, np.uint64(offset)), 63)
    high = bits_to_arithmetic(party, planes[shift:63], rows)
    weights = np.left_shift(np.uint64(1), np.arange(63 - shift, dtype=np.uint64))
    rounded = (high * weights[:, None]).sum(axis=0, dtype=np.uint64)
    return add_public(party, rounded, np.uint64(-(1 << (62 - shift)) % (1 << 64)))


def add_noise(party: Party, values: Shares, dp: DP, sensitivity: int) -> Shares:
    """values rounded to the noise's unit 2^t >= ``sensitivity`` (raw units), plus noise * 2^t."""
    shift = noise_shift(sensitivity)
    rounded = round_to_unit(party, values, shift)
    noise = binomial_noise(party, values.shape[0], dp.trials)
    noisy: Shares = (rounded + noise) << np.uint64(shift)
    return noisy


def clip(party: Party, values: Shares, lo: int, hi: int) -> Shares:
    """Shares of min(max(x, lo), hi) for raw-unit bounds lo < hi (public).

    One batched comparison pair ([x < lo], [hi < x], 8 rounds) and one round of
    products: x + [x < lo](lo - x) + [x > hi](hi - x).  Opened: masked values only.
    """
    rows = values.shape[0]
    if rows == 0:
        return values
    low_gap = add_public(party, values, np.uint64(-lo % (1 << 64)))
    high_gap = add_public(party, np.uint64(0) - values, np.uint64(hi % (1 << 64)))
    signs = less_than_zero(party, np.concatenate([low_gap, high_gap]))
    below, above = signs[:rows], signs[rows:]
    raise_by, lower_by = multiply(party, [(below, np.uint64(0) - low_gap), (above, high_gap)])
    clipped: Shares = values + raise_by + lower_by
    return clipped
