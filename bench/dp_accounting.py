"""The exact privacy loss of Tally's binomial mechanism, next to the loose bound it replaced.

    python bench/dp_accounting.py [--epsilon 1] [--delta 1e-6]

For each (epsilon, delta) it prints m (coins per noisy value, :func:`tally.mpc.dp.trials_for`),
the exact delta at that epsilon (the hockey-stick divergence, :func:`exact_delta`), the
delta of m - 2 coins (why m is the fewest), the noise's standard deviation in units, the
loose m of Dwork et al. (64 ln(2/delta) / epsilon^2) and, for a job of r releases, what
basic composition charges.  No timing: these are numbers, not speeds.
"""

from __future__ import annotations

import argparse
import json
import math

from tally.mpc.dp import exact_delta, trials_for


def report(epsilon: float, delta: float, releases: int) -> dict[str, float | int]:
    trials = trials_for(epsilon, delta)
    return {
        "epsilon": epsilon,
        "delta": delta,
        "trials": trials,
        "exact_delta": exact_delta(trials, epsilon),
        "exact_delta_two_fewer": exact_delta(trials - 2, epsilon) if trials > 2 else 1.0,
        "noise_sd_units": math.sqrt(trials) / 2,
        "loose_trials": math.ceil(64 * math.log(2 / delta) / epsilon**2),
        "releases": releases,
        "job_epsilon": epsilon * releases,
        "job_delta": delta * releases,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epsilon", type=float, action="append")
    parser.add_argument("--delta", type=float, default=1e-6)
    parser.add_argument("--releases", type=int, default=2, help="count + summed columns")
    args = parser.parse_args()
    for epsilon in args.epsilon or [0.1, 0.5, 1.0, 2.0]:
        print(json.dumps(report(epsilon, args.delta, args.releases)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
