"""Run the parties of a program as separate OS processes on this machine, over loopback TCP.

:func:`run_in_processes` starts one process per party; :func:`run_partitions`
runs P independent partitions side by side, P x n processes in all (the
engine side of partitioned execution, DESIGN §6.4: keys are disjoint across
partitions, so the caller concatenates the results).  Tuples come from a
seeded :class:`~tally.mpc.tuples.Dealer` that each process builds for itself
(development only).  Uses the ``fork`` start method, so ``program`` may be
any callable, including a closure.
"""

from __future__ import annotations

import multiprocessing as mp
import socket
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any, TypeVar

from tally.mpc.party import Party
from tally.mpc.transport import SocketTransport
from tally.mpc.tuples import Dealer

Result = TypeVar("Result")
PartyProgram = Callable[[Party, Any], Any]


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """Ports that were free a moment ago (the OS picks them)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((host, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _party_process(
    index: int,
    addresses: list[tuple[str, int]],
    program: PartyProgram,
    party_input: Any,
    seed: int,
    pipe: Connection,
) -> None:
    transport = None
    try:
        transport = SocketTransport(index, addresses)
        dealer = Dealer(len(addresses), seed=seed, only_party=index)
        pipe.send(("ok", program(Party(index, transport, dealer.source(index)), party_input)))
    except BaseException as error:  # reported to the parent
        pipe.send(("error", f"{type(error).__name__}: {error}"))
    finally:
        if transport is not None:
            transport.close()
        pipe.close()


def run_partitions(
    parties: int,
    program: PartyProgram,
    partition_inputs: Sequence[Sequence[Any]],
    seed: int,
    timeout: float = 600.0,
    host: str = "127.0.0.1",
) -> list[list[Any]]:
    """Run ``program(party, inputs[p][i])`` for every partition p and party i, all in parallel.

    Returns ``results[p][i]``.  Each partition's parties have their own
    connections and their own dealer stream (seed + p).
    """
    context = mp.get_context("fork")
    jobs: list[tuple[Connection, Any]] = []
    for partition, inputs in enumerate(partition_inputs):
        if len(inputs) != parties:
            raise ValueError(
                f"partition {partition} has {len(inputs)} inputs for {parties} parties"
            )
        addresses = [(host, port) for port in free_ports(parties, host)]
        for index in range(parties):
            receiver, sender = context.Pipe(duplex=False)
            process = context.Process(
                target=_party_process,
                args=(index, addresses, program, inputs[index], seed + partition, sender),
                daemon=True,
            )
            process.start()
            sender.close()
            jobs.append((receiver, process))
    outcomes = []
    for receiver, process in jobs:
        if not receiver.poll(timeout):
            process.kill()
            raise TimeoutError(f"a party process gave no result within {timeout} s")
        outcomes.append(receiver.recv())
        process.join(timeout)
    errors = [detail for status, detail in outcomes if status == "error"]
    if errors:
        raise RuntimeError(f"a party failed: {errors[0]}")
    values = [value for _, value in outcomes]
    return [values[p * parties : (p + 1) * parties] for p in range(len(partition_inputs))]


def run_in_processes(
    parties: int, program: PartyProgram, inputs: Sequence[Any], seed: int, timeout: float = 600.0
) -> list[Any]:
    """Run ``program(party, inputs[i])`` with every party in its own process; results per party."""
    return run_partitions(parties, program, [inputs], seed, timeout)[0]
