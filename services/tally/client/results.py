"""Opened outputs: add every party's result shares and decode them.

Each party's ``GET /v1/jobs/{id}/result`` alone is uniformly random; only the sum
over all parties is the output, and only this client computes it.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from tally.client.errors import TallyError
from tally.mpc.ring import Shares, reconstruct
from tally.mpc.table import ColumnSpec, finish_derived


def decode_array(text: str) -> Shares:
    """Base64 of little-endian uint64 (the result API's encoding) to shares."""
    return np.frombuffer(base64.b64decode(text), dtype="<u8").astype(np.uint64)


def combine_results(responses: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, NDArray[Any]]]:
    """Every opened output as plain columns (partitions concatenated, padding dropped)."""
    if len({r["job_id"] for r in responses}) != 1:
        raise TallyError("the parties' results belong to different jobs")
    parties = sorted(int(r["party"]) for r in responses)
    if parties != list(range(len(responses))):
        raise TallyError(f"need one result from every party, got parties {parties}")
    ordered = sorted(responses, key=lambda r: int(r["party"]))
    out = {}
    for name, first in ordered[0]["outputs"].items():
        specs = {
            n: ColumnSpec(kind, bits, frac) for n, (kind, bits, frac) in first["specs"].items()
        }
        columns: dict[str, list[Shares]] = {n: [] for n in specs}
        valid: list[Shares] = []
        for index in range(len(first["partitions"])):
            parts = [r["outputs"][name]["partitions"][index] for r in ordered]
            for column in specs:
                columns[column].append(
                    reconstruct([decode_array(p["columns"][column]) for p in parts])
                )
            valid.append(reconstruct([decode_array(p["valid"]) for p in parts]))
        keep = np.concatenate(valid).view(np.int64) != 0 if valid else np.zeros(0, bool)
        plain = {
            n: specs[n].decode(
                np.concatenate(columns[n]) if columns[n] else np.zeros(0, np.uint64)
            )[keep]
            for n in specs
        }
        derived = {k: tuple(v) for k, v in first["derived"].items()}
        out[name] = finish_derived(plain, derived, first["order"])
    return out
