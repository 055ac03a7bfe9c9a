"""Run all parties of a protocol in one process, one thread each (tests, demos, notebooks)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

from tally.mpc.offline.prf import ShakePrf
from tally.mpc.party import Party
from tally.mpc.replicated import Replicated
from tally.mpc.transport import InProcessHub, Transport, TransportError
from tally.mpc.tuples import Dealer

Result = TypeVar("Result")


def run_transports(
    parties: int,
    program: Callable[[Transport], Result],
    timeout: float = 600.0,
    hub: InProcessHub | None = None,
) -> list[Result]:
    """Run ``program(transport)`` at every party concurrently over ``hub`` (a new
    :class:`InProcessHub` by default); return each party's result.

    The first exception raised at any party is re-raised here (one that is not the
    :class:`TransportError` another party's failure caused, when there is one).
    """
    hub = hub or InProcessHub(parties, timeout=timeout)
    results: list[Any] = [None] * parties
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            results[index] = program(hub.transport(index))
        except BaseException as error:  # surfaced to the caller below
            errors.append(error)
            hub.aborted.set()

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(parties)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    if errors:
        first = [e for e in errors if not isinstance(e, TransportError)] or errors
        raise first[0]
    if any(thread.is_alive() for thread in threads):
        raise TimeoutError(f"parties did not finish within {timeout} s")
    return results


def run_parties(
    parties: int,
    program: Callable[[Party], Result],
    seed: int | None = None,
    timeout: float = 600.0,
    dealer: Dealer | None = None,
    replicated: bool = False,
) -> list[Result]:
    """Run ``program(party)`` at every party concurrently; return each party's result.

    Parties talk through an :class:`InProcessHub` and draw tuples from one
    shared :class:`Dealer` (``dealer``, else a new one, seeded when ``seed`` is given).  The first
    exception raised at any party is re-raised here.  ``replicated`` (three parties):
    the parties agree pairwise keys first and take the honest-majority path of
    :mod:`tally.mpc.replicated`.
    """
    dealer = dealer or Dealer(parties, seed=seed)
    source = dealer  # bound for the closure (mypy keeps the Optional otherwise)

    def run(transport: Transport) -> Result:
        keys = Replicated.agree(transport, ShakePrf()) if replicated else None
        return program(Party(transport.party, transport, source.source(transport.party), keys))

    return run_transports(parties, run, timeout)
