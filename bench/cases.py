"""Benchmark cases: input generation, the MPC computation, the plain baseline, the check."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from tally.mpc.arithmetic import multiply
from tally.mpc.compare import equal, less_than_zero
from tally.mpc.party import Party
from tally.mpc.ring import decode_int, encode_int, reconstruct, split
from tally.mpc.shuffle import shuffle_columns

LIMIT = 1 << 40


@dataclass
class Case:
    rows: int
    groups: int = 100
    partitions: int = 1
    key_bits: int = 0

    def make_input(self, rng: np.random.Generator) -> Any:
        return rng.integers(-LIMIT, LIMIT, size=(2, self.rows))

    def share(self, plain: Any, parties: int, rng: np.random.Generator) -> list[Any]:
        encoded = encode_int(plain)
        return split(encoded, parties, rng)

    def run(self, party: Party, shares: Any) -> Any:
        raise NotImplementedError

    def baseline(self, plain: Any) -> Any:
        raise NotImplementedError

    def check(self, outputs: list[Any], expected: Any, plain: Any) -> bool:
        return bool(np.array_equal(decode_int(reconstruct(outputs)), expected))


class Mul(Case):
    def run(self, party: Party, shares: Any) -> Any:
        return multiply(party, [(shares[0], shares[1])])[0]

    def baseline(self, plain: Any) -> Any:
        return plain[0] * plain[1]


class Ltz(Case):
    def run(self, party: Party, shares: Any) -> Any:
        return less_than_zero(party, shares[0] - shares[1])

    def baseline(self, plain: Any) -> Any:
        return (plain[0] < plain[1]).astype(np.int64)


class Eq(Case):
    def make_input(self, rng: np.random.Generator) -> Any:
        plain = super().make_input(rng)
        same = rng.random(self.rows) < 0.5
        plain[1, same] = plain[0, same]
        return plain

    def run(self, party: Party, shares: Any) -> Any:
        return equal(party, shares[0], shares[1])

    def baseline(self, plain: Any) -> Any:
        return (plain[0] == plain[1]).astype(np.int64)


class Shuffle(Case):
    COLUMNS = 4

    def make_input(self, rng: np.random.Generator) -> Any:
        return rng.integers(-LIMIT, LIMIT, size=(self.rows, self.COLUMNS))

    def run(self, party: Party, shares: Any) -> Any:
        return shuffle_columns(party, shares)

    def baseline(self, plain: Any) -> Any:
        return plain[np.random.default_rng(0).permutation(self.rows)]

    def check(self, outputs: list[Any], expected: Any, plain: Any) -> bool:
        got = decode_int(reconstruct(outputs))
        order_got = np.lexsort(got.T[::-1])
        order_plain = np.lexsort(plain.T[::-1])
        same_rows = np.array_equal(got[order_got], plain[order_plain])
        moved = self.rows < 10 or not np.array_equal(got, plain)
        return bool(same_rows and moved)


CASES: dict[str, type[Case]] = {"mul": Mul, "ltz": Ltz, "eq": Eq, "shuffle": Shuffle}
