"""Relational operators over secret shares (DESIGN §6.7), above the protocols.

:mod:`.filters`: predicates with secret outcomes that only change ``valid``, and derived
columns.  :mod:`.join`: the sort-based PK-FK equi-join and join followed by group-by.
See docs/relational.md for each operator's steps, rounds, bytes and what it reveals.
"""

from tally.mpc.relational.filters import between, derive, filter_rows, isin
from tally.mpc.relational.join import DuplicateKeys, join_group_by, pk_fk_join
from tally.mpc.relational.plan import PlanError, execute, plan_hash

__all__ = [
    "DuplicateKeys",
    "PlanError",
    "execute",
    "plan_hash",
    "between",
    "derive",
    "filter_rows",
    "isin",
    "join_group_by",
    "pk_fk_join",
]
