"""Tally: joint analytics over secret-shared tables.

``tally.local()`` starts an embedded deployment (every party on this machine) and
``tally.connect("parties.yaml")`` reaches an existing one; both return a
:class:`~tally.client.cluster.Cluster` to upload DataFrames to and run
``group_by().agg()`` jobs on.  The engine lives in :mod:`tally.mpc`; :func:`program`
marks a plain Python function over :class:`~tally.mpc.table.SecretTable` objects as
an analytics program that every party runs identically.
"""

from __future__ import annotations

import importlib
from typing import Any

from tally.mpc.program import program

__all__ = ["Cluster", "col", "connect", "local", "program"]
__version__ = "0.1.0"

_LAZY = {
    "connect": "tally.client.cluster",
    "Cluster": "tally.client.cluster",
    "local": "tally.local_deployment",
    "col": "tally.client.relation",
}


def __getattr__(name: str) -> Any:
    """``connect``, ``local``, ``Cluster`` and ``col`` load on first use: ``import tally``
    stays light, and the services, which import this package too, never load the client."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tally' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
