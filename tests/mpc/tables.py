"""Shared test helper: share a pandas frame and run a program over it at every party."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from tally.mpc.party import Party
from tally.mpc.simulate import run_parties
from tally.mpc.table import ColumnSpec, SecretTable, share_table, table_from_share_set
from tally.mpc.tuples import Dealer


def run_frame_at_every_party(
    parties: int,
    frame: pd.DataFrame,
    specs: Mapping[str, ColumnSpec],
    program: Callable[[SecretTable], Any],
    *,
    valid: Any = None,
    seed: int | None = 2024,
    share_seed: int = 7,
    timeout: float = 60.0,
    replicated: bool = False,
    dealer: Dealer | None = None,
) -> list[Any]:
    """Share ``frame`` (seeded split), run ``program(table)`` at every party; results per party.

    ``replicated``: three parties on the honest-majority path (:mod:`tally.mpc.replicated`).
    """
    shares = share_table(
        {c: frame[c].to_numpy() for c in specs},
        specs,
        parties,
        valid=valid,
        rng=np.random.default_rng(share_seed),
    )

    def run(party: Party) -> Any:
        return program(table_from_share_set(party, shares[party.id], specs))

    return run_parties(
        parties, run, seed=seed, timeout=timeout, dealer=dealer, replicated=replicated
    )
