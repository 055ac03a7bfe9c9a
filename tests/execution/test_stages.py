"""Staged programs give the same shares as the engine's unstaged ones, and resume from any stage."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from tally.execution.checkpoint import decode_state, encode_state
from tally.execution.stages import State, build_stages, initial_state
from tally.mpc.party import Party
from tally.mpc.program import get_program
from tally.mpc.ring import reconstruct
from tally.mpc.simulate import run_parties
from tally.mpc.table import ColumnSpec, share_table, table_from_share_set
from tests.execution.cluster import GROUPBY

SPECS = {"region": ColumnSpec("key", bits=3), "views": ColumnSpec("int", bits=20)}


def _data(rows: int, seed: int = 1) -> tuple[dict[str, Any], np.ndarray]:
    rng = np.random.default_rng(seed)
    data = {"region": rng.integers(0, 6, rows), "views": rng.integers(-500, 500, rows)}
    valid = (rng.random(rows) < 0.8).astype(np.int64)
    return data, valid


PARAMS: list[tuple[str, dict[str, Any]]] = [
    (
        "groupby",
        {**GROUPBY, "max_groups": 8},
    ),
    ("groupby", {"keys": ["region"], "aggregations": {"total": ["views", "sum"]}}),
    (
        "groupby",
        {"keys": ["region"], "aggregations": {"n": ["views", "count"]}, "domain": [0, 1, 7]},
    ),
    (
        "groupby",
        {
            "keys": ["region"],
            "aggregations": {
                "kinds": ["views", "count_distinct"],
                "spread": ["views", "var"],
                "lo": ["views", "min"],
            },
            "max_groups": 8,
        },
    ),
    ("sort", {"keys": ["region"]}),
    ("sum", {"column": "views"}),
]


def _outputs(tables: dict[str, Any]) -> dict[str, list[np.ndarray]]:
    return {
        name: [t.columns[c].shares for c in sorted(t.columns)] + [t.valid.shares]
        for name, t in tables.items()
    }


@pytest.mark.parametrize(("name", "params"), PARAMS)
def test_staged_matches_engine(name: str, params: dict[str, Any]) -> None:
    data, valid = _data(60)
    shares = share_table(data, SPECS, 3, valid=valid, rng=np.random.default_rng(2))
    program = get_program(name)

    def engine(party: Party) -> dict[str, list[np.ndarray]]:
        table = table_from_share_set(party, shares[party.id], SPECS)
        return _outputs(program({"events": table}, **params))

    def staged(party: Party) -> dict[str, list[np.ndarray]]:
        table = table_from_share_set(party, shares[party.id], SPECS)
        plan = build_stages(program, {"events": (SPECS, 60)}, params)
        state = initial_state(program, {"events": table})
        for stage in plan.stages:
            # every state survives a round trip through the checkpoint encoding
            state = decode_state(encode_state(stage.run(party, state)))
        return _outputs(plan.finish(party, state))

    expected = run_parties(3, engine, seed=9)
    got = run_parties(3, staged, seed=9)
    for output in expected[0]:
        for column in range(len(expected[0][output])):
            want = reconstruct([e[output][column] for e in expected])
            have = reconstruct([g[output][column] for g in got])
            assert np.array_equal(want, have)


def test_staged_groupby_takes_the_planned_quicksort_as_one_stage(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 18: where the planner picks the quicksort (large jobs), the staged group-by
    sorts with it as the engine does (one stage, not one per radix pass); same values."""
    import tally.mpc.sorting as sorting

    monkeypatch.setattr(sorting, "choose_sort", lambda widths, rows: "quick")
    params = {**GROUPBY, "max_groups": 8}
    test_staged_matches_engine("groupby", params)
    staged = build_stages(get_program("groupby"), {"events": (SPECS, 60)}, params)
    names = [stage.name for stage in staged.stages]
    assert "sort: quicksort" in names and not any(n.startswith("sort pass") for n in names)


def test_groupby_resumes_from_every_stage_with_fresh_tuples() -> None:
    data, valid = _data(40, seed=3)
    shares = share_table(data, SPECS, 3, valid=valid, rng=np.random.default_rng(4))
    program = get_program("groupby")
    params = PARAMS[0][1]
    plan = build_stages(program, {"events": (SPECS, 40)}, params)
    frame = pd.DataFrame(data)[valid == 1]
    expected = frame.groupby("region").agg(total=("views", "sum"), n=("views", "count"))

    for resume_at in range(len(plan.stages)):

        def run(party: Party, resume_at: int = resume_at) -> dict[str, list[np.ndarray]]:
            table = table_from_share_set(party, shares[party.id], SPECS)
            state: State = initial_state(program, {"events": table})
            saved = state
            for number, stage in enumerate(plan.stages):
                state = stage.run(party, state)
                if number + 1 == resume_at:
                    saved = state
            # resume: rerun everything after the saved stage with the tuples that follow
            state = saved
            for stage in plan.stages[resume_at:]:
                state = stage.run(party, state)
            table_out = plan.finish(party, state)["result"]
            return {
                "cols": [table_out.columns[c].shares for c in ("region", "total", "n")]
                + [table_out.valid.shares]
            }

        results = run_parties(3, run, seed=resume_at)
        region, total, count, ok = (
            reconstruct([r["cols"][i] for r in results]).view(np.int64) for i in range(4)
        )
        keep = ok == 1
        got = pd.DataFrame({"total": total[keep], "n": count[keep]}, index=region[keep])
        assert np.array_equal(got["total"].to_numpy(), expected["total"].to_numpy()), resume_at
        assert np.array_equal(got["n"].to_numpy(), expected["n"].to_numpy()), resume_at
