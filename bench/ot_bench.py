"""``bench/run.py gen-triples --tuples ot --parties N``: the ot generator's triples, n processes.

Each party is an OS process; they talk over loopback TCP (SocketTransport).
Prints triples/s for the generation (base OTs excluded, reported apart),
bytes sent per party per triple, and, as the same-run baseline, the rate at
which the local development dealer samples and splits the same triples.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time
from typing import Any

from tally.common.prf import AesCtrPrf
from tally.mpc.offline.ot import OtGenerator, keep_freed_buffers
from tally.mpc.processes import free_ports
from tally.mpc.transport import SocketTransport
from tally.mpc.tuples import Dealer
from tally.tuples.ot_group import Ed25519Group
from tally.tuples.ot_hash import AesBlockHash


def party(index: int, addresses: list[tuple[str, int]], count: int, batch: int, pipe: Any) -> None:
    keep_freed_buffers()
    transport = SocketTransport(index, addresses, connect_timeout=30.0, io_timeout=600.0)
    try:
        started = time.perf_counter()
        generator = OtGenerator(
            transport, AesCtrPrf(), AesBlockHash(), b"bench", group=Ed25519Group()
        )
        setup_seconds = time.perf_counter() - started
        setup_bytes = transport.bytes_sent
        started = time.perf_counter()
        for i in range(0, count, batch):
            generator.triples(b"t%d" % i, min(batch, count - i))
        seconds = time.perf_counter() - started
        pipe.send((setup_seconds, seconds, transport.bytes_sent - setup_bytes, setup_bytes))
    finally:
        transport.close()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="run.py gen-triples --tuples ot")
    parser.add_argument("--tuples", choices=["ot"], default="ot")
    parser.add_argument("--parties", type=int, default=2)
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1 << 14)
    args = parser.parse_args(argv)
    if args.parties < 2:
        parser.error("the ot generator needs at least 2 parties")
    addresses = [("127.0.0.1", p) for p in free_ports(args.parties)]
    context = mp.get_context("fork")
    pipes, processes = [], []
    for index in range(args.parties):
        receiver, sender = context.Pipe(duplex=False)
        process = context.Process(
            target=party, args=(index, addresses, args.count, args.batch, sender)
        )
        process.start()
        pipes.append(receiver)
        processes.append(process)
    results = [pipe.recv() for pipe in pipes]
    for process in processes:
        process.join()
    setup = max(r[0] for r in results)
    seconds = max(r[1] for r in results)
    per_triple = max(r[2] for r in results) / args.count
    rate = args.count / seconds
    started = time.perf_counter()
    dealer = Dealer(args.parties)
    for i in range(0, args.count, args.batch):
        for p in range(args.parties):
            dealer.source(p).triples(min(args.batch, args.count - i))
    dealer_rate = args.count / (time.perf_counter() - started)
    print(f"ot triples, {args.parties} parties as processes on loopback, {args.count} triples")
    print(f"  base OTs (once per run): {setup:.2f} s, {results[0][3]} bytes sent by party 0")
    print(f"  generation: {seconds:.2f} s, {rate:,.0f} triples/s")
    print(f"  sent per party per triple: {per_triple:,.0f} bytes")
    print(
        f"  baseline (same run): local dealer {dealer_rate:,.0f} triples/s; ot/dealer = "
        f"{rate / dealer_rate:.3f}"
    )
    return 0
