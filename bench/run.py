"""Benchmarks: each party in its own OS process over loopback TCP, one JSON line per run.

    python bench/run.py CASE [--parties N] [--rows N] [--groups G] [--tuples dealer]
                             [--partitions P] [--key-bits L] [--padding domain] [--dp --clip]
    CASE: mul ltz eq shuffle sort groupby bound (contribution bounding to 5 rows a unit)
    python bench/run.py gen-triples --tuples hm3   (offline phase; see tuples_bench.py)
    python bench/run.py job-groupby [--rows N] [--groups G]   (services; see job_bench.py)
    python bench/run.py store-upload | store-meta   (the secret-store; see store.py)

Every line carries ``case, parties, rows, groups, tuples, online_seconds,
offline_seconds, baseline_seconds, bytes_per_party, rounds, correct``.
The case runs twice: a first run records the tuple plan (and warms up), then
every party's dealer generates exactly that plan (``offline_seconds``,
``tuple_bytes``) and the second run is timed (``online_seconds``).  The
baseline is the same computation in plain numpy/pandas, timed in this run.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))

from cases import CASES, Case  # noqa: E402
from tally.mpc.party import Party  # noqa: E402
from tally.mpc.processes import free_ports  # noqa: E402
from tally.mpc.transport import SocketTransport  # noqa: E402
from tally.mpc.tuples import Dealer  # noqa: E402


@dataclass
class PartyReport:
    output: Any
    online_seconds: float
    offline_seconds: float
    tuple_bytes: int
    bytes_sent: int
    rounds: int


PREFETCH_LIMIT = 2 << 30
"""Per-party tuple bytes above which the timed run generates tuples lazily."""


def plan_bytes(plan: list[tuple[str, tuple[Any, ...]]], parties: int) -> int:
    """Bytes of one party's shares for a recorded tuple plan (the permuting party's view)."""
    total = 0
    for kind, params in plan:
        if kind == "triples" or kind == "bit_triples":
            total += 24 * int(params[0])
        elif kind == "dabits":
            total += 8 * int(params[0]) + int(params[0]) // 8
        elif kind == "edabits":
            total += 8 * int(params[0]) + int(params[0]) * int(params[1]) // 8
        elif kind == "shuffle":
            rows, width = int(params[0]), len(str(params[1]))
            total += 8 * rows * (1 + width) + 16 * rows * width * (parties - 1)
        elif kind == "input_masks":
            total += 8 * int(params[0])
    return total


def party_main(
    index: int,
    addresses: list[tuple[str, int]],
    case: Case,
    inputs: list[Any],
    seed: int,
    pipe: Any,
) -> None:
    try:
        transport = SocketTransport(index, addresses)
        record = Dealer(len(addresses), seed=seed, only_party=index)
        party = Party(index, transport, record.source(index))
        case.run(party, inputs[index])  # warm-up, records the tuple plan
        dealer = Dealer(len(addresses), seed=seed + 1, only_party=index)
        tuple_bytes = plan_bytes(record.requests, len(addresses))
        # Pre-generate the whole plan when it fits in memory; otherwise generate
        # lazily and subtract this party's generation time from its wall time.
        lazy = tuple_bytes > PREFETCH_LIMIT
        started = time.perf_counter()
        if not lazy:
            dealer.prefetch(record.requests)
        offline = time.perf_counter() - started
        source = dealer.source(index)
        party = Party(index, transport, source)
        transport.broadcast([np.zeros(1, np.uint64)])  # line up the parties
        sent, rounds = transport.bytes_sent, transport.rounds
        started = time.perf_counter()
        output = case.run(party, inputs[index])
        online = time.perf_counter() - started
        if lazy:
            online -= source.generation_seconds
            offline = source.generation_seconds
        pipe.send(
            PartyReport(
                output,
                online,
                offline,
                tuple_bytes,
                transport.bytes_sent - sent,
                transport.rounds - rounds,
            )
        )
        transport.close()
    except BaseException as error:
        pipe.send(error)
        raise


def run_case(
    name: str,
    parties: int,
    rows: int,
    groups: int,
    partitions: int,
    key_bits: int,
    seed: int,
    **options: Any,
) -> dict[str, Any]:
    case = CASES[name](
        rows=rows, groups=groups, partitions=partitions, key_bits=key_bits, **options
    )
    rng = np.random.default_rng(seed)
    plain = case.make_input(rng)
    started = time.perf_counter()
    expected = case.baseline(plain)
    baseline = time.perf_counter() - started

    shared_parts = case.share_partitions(plain, parties, rng)
    context = mp.get_context("fork")
    pipes, processes = [], []
    for part_inputs in shared_parts:
        addresses = [("127.0.0.1", port) for port in free_ports(parties)]
        for index in range(parties):
            parent, child = context.Pipe(duplex=False)
            process = context.Process(
                target=party_main, args=(index, addresses, case, part_inputs, seed, child)
            )
            process.start()
            pipes.append(parent)
            processes.append(process)
    all_reports = [pipe.recv() for pipe in pipes]
    for process in processes:
        process.join()
    for report in all_reports:
        if isinstance(report, BaseException):
            raise report
    by_part = [all_reports[k * parties : (k + 1) * parties] for k in range(len(shared_parts))]
    outputs = [[r.output for r in part] for part in by_part]
    correct = case.check_partitions(outputs, expected, plain)
    reports = [
        PartyReport(
            None,
            max(part[i].online_seconds for part in by_part),
            max(part[i].offline_seconds for part in by_part),
            sum(part[i].tuple_bytes for part in by_part),
            sum(part[i].bytes_sent for part in by_part),
            max(part[i].rounds for part in by_part),
        )
        for i in range(parties)
    ]
    return {
        "case": name,
        "parties": parties,
        "rows": rows,
        "groups": groups,
        "partitions": partitions,
        **options,
        "tuples": "dealer",
        "online_seconds": round(max(r.online_seconds for r in reports), 4),
        "offline_seconds": round(max(r.offline_seconds for r in reports), 4),
        "tuple_bytes_per_party": max(r.tuple_bytes for r in reports),
        "baseline_seconds": round(baseline, 6),
        "ratio_to_baseline": round(max(r.online_seconds for r in reports) / max(baseline, 1e-9), 1),
        "bytes_per_party": max(r.bytes_sent for r in reports),
        "bytes_per_row_per_party": round(max(r.bytes_sent for r in reports) / max(rows, 1), 2),
        "rounds": max(r.rounds for r in reports),
        "rows_per_second": round(rows / max(max(r.online_seconds for r in reports), 1e-9)),
        "correct": bool(correct),
    }


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    if arguments[:1] == ["gen-triples"]:  # the offline phase: three tuple-services
        import tuples_bench

        return tuples_bench.main(arguments[1:])
    if arguments[:1] in (["store-upload"], ["store-meta"]):  # the secret-store; see store.py
        import store

        return store.main(arguments)
    if arguments[:1] == ["job-groupby"]:  # the execution services; see job_bench.py
        import job_bench

        return job_bench.cli(arguments[1:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("case", choices=sorted(CASES))
    parser.add_argument("--parties", type=int, default=3)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--groups", type=int, default=100)
    parser.add_argument("--partitions", type=int, default=1)
    parser.add_argument("--key-bits", type=int, default=0, help="0: just enough for --groups")
    parser.add_argument("--tuples", choices=["dealer"], default="dealer")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument(
        "--padding", choices=["max_groups", "domain"], default="max_groups", help="group-by only"
    )
    parser.add_argument(
        "--dp",
        action="store_true",
        help="group-by under dp: epsilon 1, delta 1e-6, a public domain of --groups keys",
    )
    parser.add_argument(
        "--clip", action="store_true", help="with --dp: values clipped to [0, 1000] in MPC"
    )
    args = parser.parse_args(argv)
    if args.dp and not args.clip:
        parser.error("--dp needs --clip: a summed column's sensitivity comes from its bounds")
    options: dict[str, Any] = {}
    if args.case == "groupby":
        options = {"padding": "domain" if args.dp else args.padding, "dp": args.dp}
    result = run_case(
        args.case,
        args.parties,
        args.rows,
        args.groups,
        args.partitions,
        args.key_bits,
        args.seed,
        **options,
    )
    print(json.dumps(result), flush=True)
    return 0 if result["correct"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
