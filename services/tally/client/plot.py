"""A bar chart of a result: one bar per group, the height an aggregate (matplotlib, no display).

The PNG records what it shows in its text metadata (``Description``: the number of
bars, the column and the keys), so scripts and tests can check a chart without
looking at pixels.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import pandas as pd

from tally.client.errors import InputError, UnknownColumnError


def bar_chart(
    frame: pd.DataFrame,
    path: str | os.PathLike[str],
    value: str | None = None,
    keys: Sequence[str] | None = None,
    title: str | None = None,
) -> int:
    """Write a bar chart of ``value`` per group (``keys``) to ``path``; returns the bar count.

    By default the keys are the non-numeric columns (or the first column) and the value
    the first numeric column that is not a key.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    if frame.empty:
        raise InputError("the result has no rows to plot")
    numeric = [c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c])]
    key_columns = list(keys) if keys else [c for c in frame.columns if c not in numeric]
    if not key_columns:
        key_columns = [str(frame.columns[0])]
    values = [c for c in numeric if c not in key_columns]
    column = value or (values[0] if values else None)
    if column is None:
        raise InputError("the result has no numeric column to plot")
    for name in [*key_columns, column]:
        if name not in frame.columns:
            columns = list(frame.columns)
            raise UnknownColumnError(f"unknown column {name!r}; the result has {columns}")
    labels = frame[key_columns].astype(str).agg(" / ".join, axis=1).tolist()
    heights = pd.to_numeric(frame[column], errors="coerce").fillna(0.0).tolist()
    figure, axes = pyplot.subplots(figsize=(max(6.0, 0.35 * len(labels) + 2), 4.5))
    try:
        bars = axes.bar(range(len(labels)), heights, color="#4C72B0")
        axes.set_xticks(range(len(labels)), labels, rotation=60 if len(labels) > 8 else 0,
                        ha="right" if len(labels) > 8 else "center", fontsize=8)  # fmt: skip
        axes.set_xlabel(" / ".join(key_columns))
        axes.set_ylabel(column)
        axes.set_title(title or f"{column} per {' / '.join(key_columns)}")
        figure.tight_layout()
        description = f"tally result: {len(bars)} bars of {column} per {', '.join(key_columns)}"
        figure.savefig(path, format="png", dpi=100, metadata={"Description": description})
        return len(bars)
    finally:
        pyplot.close(figure)
