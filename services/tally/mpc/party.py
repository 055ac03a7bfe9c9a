"""A party's runtime handle: who it is, how it talks, where its tuples come from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from tally.mpc.transport import Transport
from tally.mpc.tuples import TupleSource

if TYPE_CHECKING:
    from tally.mpc.replicated import Replicated


@dataclass
class Party:
    """Everything a protocol needs at one party: its id, its transport and its tuple source.

    ``replicated`` (three parties, honest majority only) holds the pairwise keys of
    :mod:`tally.mpc.replicated`: products, ANDs and comparisons then use no triples,
    daBits or edaBits; the tuple source still serves shuffles, input masks and the
    random bits of DP noise.
    """

    id: int
    transport: Transport
    tuples: TupleSource
    replicated: Replicated | None = None

    @property
    def parties(self) -> int:
        """How many parties run the protocol."""
        return self.transport.parties

    @property
    def is_leader(self) -> bool:
        """Party 0 adds public constants and the d*e term of a Beaver product."""
        return self.id == 0
