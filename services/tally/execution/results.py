"""Client side of opened outputs: add every party's shares from ``GET /v1/jobs/{id}/result``.

Each party's response alone is uniformly random; only their sum is the output.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from tally.execution.jobs import decode_array
from tally.mpc.ring import reconstruct
from tally.mpc.table import ColumnSpec, finish_derived


def combine_results(
    responses: Sequence[dict[str, Any]], drop_invalid: bool = True
) -> dict[str, dict[str, NDArray[Any]]]:
    """Every opened output as plain columns (partitions concatenated, padding dropped)."""
    if len({r["job_id"] for r in responses}) != 1:
        raise ValueError("the responses are from different jobs")
    parties = sorted(r["party"] for r in responses)
    if parties != list(range(len(responses))):
        raise ValueError(f"need one response from every party, got parties {parties}")
    out = {}
    for name, first in responses[0]["outputs"].items():
        specs = {
            n: ColumnSpec(kind, bits, frac) for n, (kind, bits, frac) in first["specs"].items()
        }
        columns: dict[str, list[NDArray[Any]]] = {n: [] for n in specs}
        valid: list[NDArray[Any]] = []
        for index in range(len(first["partitions"])):
            parts = [r["outputs"][name]["partitions"][index] for r in responses]
            for column in specs:
                shares = [decode_array(p["columns"][column]) for p in parts]
                columns[column].append(reconstruct(shares))
            valid.append(reconstruct([decode_array(p["valid"]) for p in parts]))
        opened_valid = np.concatenate(valid).view(np.int64)
        keep = opened_valid != 0 if drop_invalid else np.ones(len(opened_valid), bool)
        plain = {n: specs[n].decode(np.concatenate(columns[n]))[keep] for n in specs}
        derived = {k: tuple(v) for k, v in first["derived"].items()}
        out[name] = finish_derived(plain, derived, first["order"])
    return out
