"""The tuple-service with ``TALLY_TUPLES_GENERATOR=ot``: three processes on SQLite, tuples by OT."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from tally.mpc.bits import from_planes, unpack_lanes
from tally.mpc.ring import reconstruct
from tests.tuples.cluster import Cluster
from tests.tuples.relations import sources, xor_reconstruct


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    running = Cluster(tmp_path_factory.mktemp("ot"), chunk_size=1024, generator="ot").start_all()
    try:
        yield running
    finally:
        running.stop()


def test_ot_tuples_from_three_processes_reconstruct(cluster: Cluster) -> None:
    wants = {
        "triples": 2000,
        "bit_triples": 40,
        "dabits": 300,
        "edabits:20": 100,
        "input_masks": 50,
    }
    response = cluster.post(
        0, "/v1/reservations", {"job_id": "ot", "tuples": wants, "generate_missing": True}
    )
    assert response.status_code == 201, response.text
    readers = sources(cluster, response.json()["reservation_id"])
    triples = [s.triples(2000) for s in readers]
    a, b, c = (reconstruct([t[k] for t in triples]) for k in range(3))
    np.testing.assert_array_equal(c, a * b)
    bit_triples = [s.bit_triples(40) for s in readers]
    x, y, z = (xor_reconstruct([t[k] for t in bit_triples]) for k in range(3))
    np.testing.assert_array_equal(z, x & y)
    dabits = [s.dabits(300) for s in readers]
    arith = reconstruct([d[0] for d in dabits])
    assert set(np.unique(arith).tolist()) == {0, 1}
    np.testing.assert_array_equal(unpack_lanes(xor_reconstruct([d[1] for d in dabits]), 300), arith)
    edabits = [s.edabits(100, 20) for s in readers]
    value = reconstruct([e[0] for e in edabits])
    np.testing.assert_array_equal(from_planes(xor_reconstruct([e[1] for e in edabits]), 100), value)
    assert int(value.max()) < 2**20
    masks = [s.input_masks(50) for s in readers]
    assert len(np.unique(np.concatenate(masks))) == 150
