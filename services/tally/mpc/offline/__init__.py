"""Offline material without a trusted dealer (DESIGN §4): the ``hm3`` generator and its parts.

* :mod:`~tally.mpc.offline.prf`: keyed PRFs that expand pairwise keys into ring words.
* :mod:`~tally.mpc.offline.replicated`: 2-out-of-3 replicated sharing over pairwise keys.
* :mod:`~tally.mpc.offline.hm3`: every tuple type, in the dealer's share layout.
* :mod:`~tally.mpc.offline.source`: ``Hm3Source``, a ``TupleSource`` generating on demand.
* :mod:`~tally.mpc.offline.dealer`: the local dealer as a stream of chunks.
"""

from __future__ import annotations

from tally.mpc.offline.hm3 import Hm3Generator
from tally.mpc.offline.prf import Prf, ShakePrf
from tally.mpc.offline.replicated import PairKeys, SetupError, agree_keys
from tally.mpc.offline.source import Hm3Source

__all__ = [
    "Hm3Generator",
    "Hm3Source",
    "PairKeys",
    "Prf",
    "SetupError",
    "ShakePrf",
    "agree_keys",
]
