"""How a job's result dataset is laid out in the secret-store, for its writer and its readers.

The execution service writes each ``shares`` output as an ordinary dataset at every
party, under the same id everywhere.  Its columns are the output's columns (helpers
such as ``__count`` included) plus ``valid``, the 0/1 weight of each row (padding rows
have 0).  What the reader needs to finish the output after adding the parties' shares
rides in tags:

* ``tally.job``, ``tally.output``: the job and the program output it came from;
* ``tally.layout.0``, ``tally.layout.1``, ...: one JSON text ``{"derived": …, "order": …}``
  cut into tag-sized pieces (a tag value holds at most 256 characters).  ``derived``
  maps an output column to ``[operation, source, …]`` (``mean``: sum / count,
  ``extreme``: NaN for an empty group), ``order`` lists the output columns in order;
  see :func:`tally.mpc.table.finish_derived`.

:func:`open_result` turns every party's shares of such a dataset into the output.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from tally.mpc.ring import reconstruct
from tally.mpc.table import ColumnSpec, finish_derived

VALID_COLUMN = "valid"
"""The weight column: 1 for a real row, 0 for padding (and for an input row to ignore)."""

JOB_TAG = "tally.job"
OUTPUT_TAG = "tally.output"
LAYOUT_TAG = "tally.layout."
TAG_VALUE_LIMIT = 256


def layout_tags(
    derived: Mapping[str, Sequence[str]], order: Sequence[str] | None
) -> dict[str, str]:
    """The ``tally.layout.<i>`` tags that carry ``derived`` and ``order``."""
    text = json.dumps(
        {"derived": {k: list(v) for k, v in derived.items()}, "order": order},
        separators=(",", ":"),
    )
    pieces = [text[i : i + TAG_VALUE_LIMIT] for i in range(0, len(text), TAG_VALUE_LIMIT)]
    return {f"{LAYOUT_TAG}{index}": piece for index, piece in enumerate(pieces)}


def read_layout(tags: Mapping[str, str]) -> tuple[dict[str, tuple[str, ...]], list[str] | None]:
    """``(derived, order)`` from a result dataset's tags (empty when it has none)."""
    pieces: list[str] = []
    while f"{LAYOUT_TAG}{len(pieces)}" in tags:
        pieces.append(tags[f"{LAYOUT_TAG}{len(pieces)}"])
    if not pieces:
        return {}, None
    data: dict[str, Any] = json.loads("".join(pieces))
    derived = {name: tuple(sources) for name, sources in data.get("derived", {}).items()}
    order = data.get("order")
    return derived, list(order) if order is not None else None


def open_result(
    columns: Sequence[Mapping[str, Any]],
    shares: Sequence[Mapping[str, NDArray[np.uint64]]],
    tags: Mapping[str, str],
    drop_invalid: bool = True,
) -> dict[str, NDArray[Any]]:
    """The plain output from every party's shares of one result dataset.

    ``columns`` and ``tags`` are the dataset's metadata (as the secret-store lists them),
    ``shares[i]`` party i's shares by column name.  Padding rows are dropped.
    """
    specs = {
        c["name"]: ColumnSpec(
            "int" if c["kind"] == "bool" else c["kind"], int(c["bits"]), int(c["frac_bits"])
        )
        for c in columns
        if c["name"] != VALID_COLUMN
    }
    valid = reconstruct([party[VALID_COLUMN] for party in shares]).view(np.int64)
    keep = valid != 0 if drop_invalid else np.ones(len(valid), bool)
    plain = {
        name: spec.decode(reconstruct([party[name] for party in shares]))[keep]
        for name, spec in specs.items()
    }
    derived, order = read_layout(tags)
    return finish_derived(plain, derived, order)
