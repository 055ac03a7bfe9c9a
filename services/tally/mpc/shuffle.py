"""Secret shuffle of several columns with one permutation per party (DESIGN §6.2).

For each party j in turn, with a ``shuffle`` tuple: every party i != j holds
random a_i, b_i; party j holds its permutation pi_j and
Delta_j = pi_j(sum a_i) + sum b_i.
  1. every i != j sends z_i = x_i + a_i to j;
  2. j's new share is pi_j(x_j + sum z_i) - Delta_j; i's new share is b_i.
The new shares add up to pi_j(x).  After all n steps the columns are
permuted by pi_{n-1} o ... o pi_0, which no coalition of n-1 parties knows.
Rounds: n.  Communication per row and column: each party sends 8 bytes to
each of the other n-1 parties over the whole shuffle (once per step in which
it is a helper).  What j receives is x_i padded with the uniform a_i; what the
others keep is fresh randomness b_i, so nobody learns anything.

Columns of kind 'x' are XOR-shared and use XOR in place of + and -.
"""

from __future__ import annotations

import numpy as np

from tally.mpc.party import Party
from tally.mpc.ring import Shares, column_runs, combine_columns
from tally.mpc.tuples import HelperShare


def shuffle_columns(party: Party, columns: Shares, kinds: str | None = None) -> Shares:
    """Shuffle the rows of ``columns`` (shape ``(rows, width)``) with a fresh secret permutation."""
    columns = np.ascontiguousarray(columns, dtype=np.uint64)
    rows, width = columns.shape
    kinds = kinds or "a" * width
    if len(kinds) != width:
        raise ValueError("one kind per column")
    runs = column_runs(kinds)

    def combine(left: Shares, right: Shares) -> Shares:
        return combine_columns(left, right, runs)

    def remove(left: Shares, right: Shares) -> Shares:
        return combine_columns(left, right, runs, subtract=True)

    correlation = party.tuples.shuffle(rows, kinds)
    share = columns
    for permuter, part in enumerate(correlation):
        if isinstance(part, HelperShare):
            party.transport.exchange({permuter: [combine(share, part.mask)]}, [])
            share = part.output
        else:
            received = party.transport.exchange(
                {}, [p for p in range(party.parties) if p != permuter]
            )
            total = share
            for arrays in received.values():
                total = combine(total, arrays[0].view(np.uint64).reshape(rows, width))
            share = remove(total[part.permutation], part.delta)
    return share
