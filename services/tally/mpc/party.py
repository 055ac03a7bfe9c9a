"""A party's runtime handle: who it is, how it talks, where its tuples come from."""

from __future__ import annotations

from dataclasses import dataclass

from tally.mpc.transport import Transport
from tally.mpc.tuples import TupleSource


@dataclass
class Party:
    """Everything a protocol needs at one party: its id, its transport and its tuple source."""

    id: int
    transport: Transport
    tuples: TupleSource

    @property
    def parties(self) -> int:
        """How many parties run the protocol."""
        return self.transport.parties

    @property
    def is_leader(self) -> bool:
        """Party 0 adds public constants and the d*e term of a Beaver product."""
        return self.id == 0
