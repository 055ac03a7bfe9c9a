"""Differential privacy on outputs: the binomial mechanism inside MPC (DESIGN §6.5).

noise = sum_{j<m} r_j - m/2 over m shared uniformly random bits r_j (the
arithmetic halves of daBits), added to an aggregate before anything is
opened.  Summing shares is local, so the noise costs m daBits per output value
and no communication; no party knows the noise.

Choosing m.  Dwork, Kenthapadi, McSherry, Mironov and Naor, "Our Data,
Ourselves: Privacy via Distributed Noise Generation" (EUROCRYPT 2006), show
that Binomial(m, 1/2) noise gives (epsilon, delta)-differential privacy to a
query of sensitivity 1 when m >= 64 ln(2/delta) / epsilon^2.  Scaling the
query by 1/Delta reduces sensitivity Delta to 1, so for integer outputs we use
m = ceil(64 * Delta^2 * ln(2 / delta) / epsilon^2).  The standard deviation of
the noise is sqrt(m)/2.  Fixed-point aggregates get the same integer noise in
units of the value (i.e. scaled by 2^f), so ``sensitivity`` is given in the
column's units and rounded up to a whole number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tally.mpc.arithmetic import add_public
from tally.mpc.party import Party
from tally.mpc.ring import Shares


@dataclass(frozen=True)
class DP:
    """Parameters of the binomial mechanism for one release."""

    epsilon: float
    delta: float
    sensitivity: float = 1.0

    def __post_init__(self) -> None:
        if not self.epsilon > 0:
            raise ValueError("dp epsilon must be positive")
        if not 0 < self.delta < 1:
            raise ValueError("dp delta must lie strictly between 0 and 1")
        if not self.sensitivity > 0:
            raise ValueError("dp sensitivity must be positive")

    @property
    def trials(self) -> int:
        """m: the number of shared coins per noisy value."""
        sensitivity = math.ceil(self.sensitivity)
        return math.ceil(64 * sensitivity**2 * math.log(2 / self.delta) / self.epsilon**2)


def binomial_noise(party: Party, count: int, trials: int) -> Shares:
    """Shares of ``count`` independent values sum_{j<m} r_j - m/2 (m even; rounded up)."""
    trials += trials % 2
    arith, _ = party.tuples.dabits(count * trials)
    total = arith.reshape(count, trials).sum(axis=1, dtype=np.uint64)
    return add_public(party, total, np.uint64(-(trials // 2) % (1 << 64)))


def add_noise(party: Party, values: Shares, dp: DP, frac_bits: int = 0) -> Shares:
    """values + noise (noise scaled to the column's fixed-point units)."""
    noise = binomial_noise(party, values.shape[0], dp.trials)
    return values + (noise << np.uint64(frac_bits))
