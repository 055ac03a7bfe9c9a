"""Parties as OS processes over loopback TCP, and partitions aggregated side by side."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from tally.mpc.partition import split_partitions
from tally.mpc.party import Party
from tally.mpc.processes import run_in_processes, run_partitions
from tally.mpc.ring import decode_int, encode_int, reconstruct, split
from tally.mpc.table import ColumnSpec, share_table, table_from_share_set

SPECS = {"region": ColumnSpec("key", bits=5), "views": ColumnSpec("int")}


def test_multiply_in_three_processes() -> None:
    rng = np.random.default_rng(4)
    x, y = rng.integers(-1000, 1000, 500), rng.integers(-1000, 1000, 500)
    inputs = list(zip(split(encode_int(x), 3, rng), split(encode_int(y), 3, rng), strict=True))

    def program(party: Party, shares: Any) -> Any:
        from tally.mpc.arithmetic import multiply

        return multiply(party, [shares])[0]

    outputs = run_in_processes(3, program, inputs, seed=9, timeout=120)
    assert np.array_equal(decode_int(reconstruct(outputs)), x * y)


def test_a_failing_party_is_reported() -> None:
    def program(party: Party, _: Any) -> Any:
        raise ValueError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        run_in_processes(2, program, [None, None], seed=1, timeout=60)


@pytest.mark.parametrize("partitions", [1, 3])
def test_partitioned_group_by_in_parallel_processes(partitions: int) -> None:
    rng = np.random.default_rng(partitions)
    provider_a = {"region": rng.integers(0, 20, 300), "views": rng.integers(-50, 500, 300)}
    provider_b = {"region": rng.integers(5, 25, 200), "views": rng.integers(0, 900, 200)}
    key = b"consortium-wide-partition-key-01"
    split_a = split_partitions(provider_a, ["region"], partitions, key, size=300)
    split_b = split_partitions(provider_b, ["region"], partitions, key, size=300)
    partition_inputs = []
    for (cols_a, valid_a), (cols_b, valid_b) in zip(split_a, split_b, strict=True):
        shares_a = share_table(cols_a, SPECS, 3, valid=valid_a)
        shares_b = share_table(cols_b, SPECS, 3, valid=valid_b)
        joined = [
            {name: np.concatenate([a[name], b[name]]) for name in a}
            for a, b in zip(shares_a, shares_b, strict=True)
        ]
        partition_inputs.append(joined)

    def program(party: Party, share_set: Any) -> Any:
        table = table_from_share_set(party, share_set, SPECS)
        out = table.group_by("region", max_groups=25).agg(
            total=("views", "sum"), n=("views", "count")
        )
        return {
            "region": out["region"].shares,
            "total": out["total"].shares,
            "n": out["n"].shares,
            "valid": out.valid.shares,
        }

    results = run_partitions(3, program, partition_inputs, seed=5, timeout=300)
    pieces = []
    for party_outputs in results:
        plain = {
            c: decode_int(reconstruct([o[c] for o in party_outputs])) for c in party_outputs[0]
        }
        keep = plain.pop("valid") == 1
        pieces.append(pd.DataFrame({c: v[keep] for c, v in plain.items()}))
    got = pd.concat(pieces).sort_values("region").reset_index(drop=True)
    frame = pd.concat([pd.DataFrame(provider_a), pd.DataFrame(provider_b)])
    expected = (
        frame.groupby("region").agg(total=("views", "sum"), n=("views", "count")).reset_index()
    )
    assert got.to_numpy().tolist() == expected.to_numpy().tolist()
