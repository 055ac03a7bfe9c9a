"""The dry plan: an upper bound, close to what a job really consumes, from two tiny runs."""

from __future__ import annotations

import resource
from typing import Any

import numpy as np
import pytest

from tally.execution.planning import (
    PlanTooLarge,
    estimate_tuples,
    estimate_tuples_bounded,
    kind_name,
    plan_tuples,
)
from tally.mpc.party import Party
from tally.mpc.program import get_program
from tally.mpc.table import ColumnSpec, SecretTable, share_table
from tally.mpc.transport import InProcessHub
from tally.mpc.tuples import Dealer

SPECS = {"region": ColumnSpec("key", bits=4), "views": ColumnSpec("int", bits=24)}


def consumed(rows: int, params: dict[str, Any]) -> tuple[dict[str, int], list[tuple[int, str]]]:
    """Tuples per kind and the shuffle requests of a real group-by on random data."""
    import threading

    rng = np.random.default_rng(3)
    data = {"region": rng.integers(0, 12, rows), "views": rng.integers(-1000, 1000, rows)}
    shares = share_table(data, SPECS, 3)
    hub, dealer = InProcessHub(3), Dealer(3, seed=1)

    def run(index: int) -> None:
        party = Party(index, hub.transport(index), dealer.source(index))
        table = SecretTable.from_shares(party, shares[index], SPECS)
        table.group_by(params["keys"], max_groups=params.get("max_groups")).agg(
            **{name: tuple(pair) for name, pair in params["aggregations"].items()}
        )

    threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    counts: dict[str, int] = {}
    for kind, request in dealer.requests:
        name = kind_name(kind, request)
        counts[name] = counts.get(name, 0) + (1 if kind == "shuffle" else int(request[0]))
    shuffles = [(int(r[0]), str(r[1])) for kind, r in dealer.requests if kind == "shuffle"]
    return counts, shuffles


@pytest.mark.parametrize("rows", [1000, 1111])
def test_the_estimate_bounds_a_padded_groupby_from_above_and_closely(rows: int) -> None:
    params = {
        "keys": ["region"],
        "aggregations": {"total": ["views", "sum"], "low": ["views", "min"]},
        "max_groups": 16,
    }
    plan = plan_tuples(get_program("groupby"), {"events": (SPECS, rows)}, params, 3)
    estimate = plan.needs
    actual, shuffles = consumed(rows, params)
    assert plan.shuffles == shuffles  # shapes predicted exactly: prefetched before the run
    assert set(estimate) == set(actual)
    words = -(-rows // 64) * 64 / rows  # the estimate is for whole 64-row words
    for kind, count in actual.items():
        assert count <= estimate[kind] <= count * words * 1.01 + 64, (kind, count, estimate[kind])


def test_a_program_that_fails_its_dry_run_gets_no_estimate() -> None:
    params = {"keys": ["nope"], "aggregations": {"n": ["views", "count"]}}
    assert estimate_tuples(get_program("groupby"), {"events": (SPECS, 5000)}, params, 3) == {}


WIDE = {"region": ColumnSpec("key", bits=20), "views": ColumnSpec("int", bits=24)}
PADDED = {"keys": ["region"], "aggregations": {"total": ["views", "sum"]}, "max_groups": 1 << 20}


def test_the_bounded_plan_is_the_plan() -> None:
    params = {**PADDED, "max_groups": 16}
    inputs = {"events": (WIDE, 100_000)}
    expected = estimate_tuples(get_program("groupby"), inputs, params, 3)
    assert expected  # a plan, not the empty answer of a failed run
    bounded = estimate_tuples_bounded(
        get_program("groupby"), inputs, params, 3, memory_bytes=1 << 30, timeout_s=120
    )
    assert bounded == expected


def _plan_padded_million(memory_bytes: int, timeout_s: float) -> dict[str, int]:
    """The bounded plan of a group-by of 10^6 rows padded to 2^20 groups."""
    return estimate_tuples_bounded(
        get_program("groupby"),
        {"events": (WIDE, 1_000_000)},
        PADDED,
        3,
        memory_bytes=memory_bytes,
        timeout_s=timeout_s,
    )


def test_a_dry_run_past_its_memory_cap_is_refused_and_the_caller_does_not_grow() -> None:
    """Issue 14 item 5: party 0's dry run ran in the service; a padded job could OOM it."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(PlanTooLarge, match="dry_run_memory_bytes"):
        _plan_padded_million(memory_bytes=128 << 20, timeout_s=120)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    print(f"caller's peak resident memory grew by {grown_mb:.1f} MB")
    assert grown_mb < 64


def test_a_dry_run_past_its_time_is_refused() -> None:
    with pytest.raises(PlanTooLarge, match="dry_run_timeout_s"):
        _plan_padded_million(memory_bytes=4 << 30, timeout_s=0.05)
