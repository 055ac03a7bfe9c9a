"""Where a (re)built mesh starts: the agreement between the parties' workers (DESIGN §7).

Every worker sends every peer a ``Hello`` when a mesh forms: its spec hash, the
stages it holds a durable checkpoint of, and the first tuple position it has never
consumed.  Then each party decides the same thing from the same hellos:

1. the spec hashes must be equal (else the job fails: the parties run different jobs);
2. resume at the newest stage that *every* party holds (0: from the inputs);
3. take tuples from the element-wise maximum of the positions: no party has
   consumed anything there, so a resumed stage never reuses a tuple;
4. one round checks that every party took the same decision (rounds: 1).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from tally._generated import partylink_pb2 as pb
from tally.execution.partylink import PartyLinkTransport, PeerLost, ProtocolViolation


def hello_for(
    spec_hash: str,
    generation: int,
    stages_held: Sequence[int],
    stages_total: int,
    tuple_next: Mapping[str, int],
) -> pb.Hello:
    """This worker's hello."""
    return pb.Hello(
        spec_hash=spec_hash,
        generation=generation,
        stages_held=list(stages_held),
        tuple_next=dict(tuple_next),
        stages_total=stages_total,
    )


def decide(own: pb.Hello, peers: Mapping[int, pb.Hello]) -> tuple[int, dict[str, int]]:
    """(resume stage, tuple start) from this worker's hello and its peers'."""
    for peer, hello in sorted(peers.items()):
        if hello.spec_hash != own.spec_hash or hello.stages_total != own.stages_total:
            raise ProtocolViolation(
                f"party {peer} runs a different job spec (hash {hello.spec_hash[:12]}…, "
                f"{hello.stages_total} stages) than this party ({own.spec_hash[:12]}…, "
                f"{own.stages_total} stages)"
            )
    everyone = [own, *peers.values()]
    common = set(own.stages_held)
    for hello in everyone:
        common &= set(hello.stages_held)
    resume = max(common, default=0)
    start: dict[str, int] = {}
    for hello in everyone:
        for kind, position in hello.tuple_next.items():
            start[kind] = max(start.get(kind, 0), int(position))
    return resume, start


def agree(
    mesh: PartyLinkTransport, own: pb.Hello, peers: Mapping[int, pb.Hello]
) -> tuple[int, dict[str, int]]:
    """:func:`decide`, then one round to confirm every party decided the same."""
    resume, start = decide(own, peers)
    summary = np.array([resume, *(start[k] for k in sorted(start))], dtype=np.uint64)
    for peer, arrays in mesh.broadcast([summary]).items():
        if not np.array_equal(arrays[0], summary):
            raise PeerLost(f"party {peer} decided differently where to resume; retrying")
    return resume, start
