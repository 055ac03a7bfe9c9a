"""Checks that reconstructed tuples of every kind satisfy their relations (DESIGN §4)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from tally.mpc.bits import from_planes, unpack_lanes
from tally.mpc.reserved import HttpTupleReader, ReservedSource
from tally.mpc.ring import reconstruct
from tally.mpc.tuples import HelperShare, PermuterShare
from tests.tuples.cluster import Cluster

EVERY_KIND = {
    "triples": 5000,
    "bit_triples": 300,
    "dabits": 1000,
    "edabits:64": 700,
    "edabits:20": 700,
    "input_masks": 100,
    "shuffle": 1,
}
"""A reservation holding every kind (sizes are what :func:`check_every_kind` reads)."""


def sources(cluster: Cluster, reservation_id: str) -> list[ReservedSource]:
    """Every party's ``ReservedSource`` over its own tuple-service (with its token)."""
    return [
        ReservedSource(
            p, 3, HttpTupleReader(cluster.url(p), reservation_id, token=cluster.token(p))
        )
        for p in range(3)
    ]


def xor_reconstruct(shares: list[np.ndarray]) -> np.ndarray:
    combined: np.ndarray = np.bitwise_xor.reduce(np.stack(shares), axis=0)
    return combined


def check_every_kind(readers: list[ReservedSource]) -> None:
    """c = a·b, bits agree across domains, edaBit value = its bits, shuffles reconstruct."""
    triples = [s.triples(5000) for s in readers]
    a, b, c = (reconstruct([t[k] for t in triples]) for k in range(3))
    np.testing.assert_array_equal(c, a * b)
    bit_triples = [s.bit_triples(300) for s in readers]
    a, b, c = (xor_reconstruct([t[k] for t in bit_triples]) for k in range(3))
    np.testing.assert_array_equal(c, a & b)
    dabits = [s.dabits(1000) for s in readers]
    arith = reconstruct([d[0] for d in dabits])
    assert set(np.unique(arith).tolist()) == {0, 1}
    np.testing.assert_array_equal(
        unpack_lanes(xor_reconstruct([d[1] for d in dabits]), 1000), arith
    )
    for width in (64, 20):
        edabits = [s.edabits(700, width) for s in readers]
        value = reconstruct([e[0] for e in edabits])
        np.testing.assert_array_equal(
            from_planes(xor_reconstruct([e[1] for e in edabits]), 700), value
        )
        assert width == 64 or int(value.max()) < 2**width
    masks = [s.input_masks(100) for s in readers]
    assert len(np.unique(np.concatenate(masks))) == 300
    with ThreadPoolExecutor(len(readers)) as pool:  # ot generates when every party asks
        correlation = list(pool.map(lambda s: s.shuffle(30, "ax"), readers))
    xor = np.array([False, True])
    for step in range(3):
        permuter = correlation[step][step]
        assert isinstance(permuter, PermuterShare)
        assert sorted(permuter.permutation.tolist()) == list(range(30))
        helpers = [correlation[p][step] for p in range(3) if p != step]
        masks_, outputs = zip(
            *[(h.mask, h.output) for h in helpers if isinstance(h, HelperShare)], strict=True
        )
        moved = np.where(xor, masks_[0] ^ masks_[1], masks_[0] + masks_[1])[permuter.permutation]
        total = np.where(xor, outputs[0] ^ outputs[1], outputs[0] + outputs[1])
        np.testing.assert_array_equal(permuter.delta, np.where(xor, moved ^ total, moved + total))
