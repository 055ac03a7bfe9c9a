"""Benchmarks: each party in its own OS process over loopback TCP, one JSON line per run.

    python bench/run.py CASE [--parties N] [--rows N] [--groups G] [--tuples dealer|hm3|ot]
                             [--partitions P] [--key-bits L] [--padding domain] [--dp --clip]
                             [--net lan|wan|slow]
    CASE: mul ltz eq shuffle sort groupby bound (contribution bounding to 5 rows a unit)
          join-groupby (--rows on each side, PK-FK join then sum per --groups campaigns)
          filter (age >= 18 & country in {1, 4, 7} over --rows: filter_rows)
    python bench/run.py gen-triples --tuples hm3   (offline phase; see tuples_bench.py)
    python bench/run.py job-groupby [--rows N] [--groups G]   (services; see job_bench.py)
    python bench/run.py store-upload | store-meta   (the secret-store; see store.py)

Every line carries ``case, parties, rows, groups, tuples, online_seconds,
offline_seconds, baseline_seconds, bytes_per_party, rounds, correct``.
The case runs twice: a first run records the tuple plan (and warms up), then
every party's dealer generates exactly that plan (``offline_seconds``,
``tuple_bytes``) and the second run is timed (``online_seconds``).  The
baseline is the same computation in plain numpy/pandas, timed in this run.
``tuple_bill`` gives the plan by kind: ``count`` and ``bytes`` per party.

``--tuples hm3`` (three parties) is the honest-majority deployment: after the
warm-up the three party processes generate the plan themselves with the
tuple-service's hm3 code, over the sockets of the online phase
(``hm3_offline.py``); ``offline_seconds`` is that generation, measured, and each
kind of ``tuple_bill`` adds the bytes a party ``sent`` and the ``rounds`` and
``seconds`` it took (``keys``: the pairwise key agreement); ``total_seconds`` is
offline + online.  ``--tuples ot`` (any number of parties) is the same with the
dealer-free ``ot`` generator (base OTs on the ``keys`` line, OT extension for every
kind, shuffle correlations by oblivious switching networks): nothing trusted.

``--net lan|wan|slow`` runs each party in its own network namespace, its uplink
shaped by netem (``tally.netns``: lan 10 Gbit/s 0.2 ms RTT, wan 1 Gbit/s 20 ms,
slow 100 Mbit/s 50 ms).  ``floor_seconds`` is the physical floor of the online
phase: the bytes the busiest party sent (every party's uplink carries all it
sends, so that is the bottleneck link; payload only, no TCP/IP headers) over
the bandwidth, plus rounds x RTT / 2 (a round is one message each way at once,
so it waits one one-way delay); ``ratio_to_floor`` is online over floor
(``offline_floor_seconds`` and ``offline_ratio_to_floor`` the same for hm3
generation).  Needs root and iproute2 (``ip``, ``tc``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from typing import Any

import numpy as np

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))

from cases import CASES, Case  # noqa: E402
from tally import netns  # noqa: E402
from tally.common.prf import AesCtrPrf  # noqa: E402
from tally.mpc.party import Party  # noqa: E402
from tally.mpc.processes import free_ports  # noqa: E402
from tally.mpc.replicated import Replicated  # noqa: E402
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
    bill: dict[str, dict[str, Any]] = field(default_factory=dict)
    offline_sent: int = 0
    offline_rounds: int = 0


PREFETCH_LIMIT = 2 << 30
"""Per-party tuple bytes above which the timed run generates tuples lazily."""
HM3_MEMORY_SHARE = 0.8
"""Of the memory available at the start, what every hm3 party's whole plan may take."""


class BenchError(RuntimeError):
    """The run cannot be made as asked; the message says why (no traceback)."""


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


def dealer_bill(plan: list[tuple[str, tuple[Any, ...]]], parties: int) -> dict[str, Any]:
    """A plan by kind (the tuple-service's names): tuples, and bytes of one party's shares."""
    bill: dict[str, dict[str, int]] = {}
    for kind, params in plan:
        name = f"edabits:{params[1]}" if kind == "edabits" else kind
        entry = bill.setdefault(name, {"count": 0, "bytes": 0})
        entry["count"] += 1 if kind == "shuffle" else int(params[0])
        entry["bytes"] += plan_bytes([(kind, params)], parties)
    return bill


def party_main(
    index: int,
    addresses: list[tuple[str, int]],
    case: Case,
    inputs: list[Any],
    seed: int,
    pipe: Any,
    tuples: str = "dealer",
    namespace: str | None = None,
    memory_budget: float = float("inf"),
    sharing: str = "additive",
) -> None:
    try:
        if namespace is not None:
            netns.enter(namespace)
        transport = SocketTransport(index, addresses)
        record = Dealer(len(addresses), seed=seed, only_party=index)
        party = Party(index, transport, record.source(index), _replicated(transport, sharing))
        case.run(party, inputs[index])  # warm-up, records the tuple plan
        tuple_bytes = plan_bytes(record.requests, len(addresses))
        bill, offline_sent, offline_rounds = dealer_bill(record.requests, len(addresses)), 0, 0
        lazy = False
        if tuples in ("hm3", "ot"):
            import hm3_offline

            if tuple_bytes > memory_budget:
                raise BenchError(
                    f"--tuples {tuples} keeps each party's whole tuple plan in memory: "
                    f"{tuple_bytes / 2**30:.1f} GiB per party process, more than its share "
                    f"of this machine's available memory ({memory_budget / 2**30:.1f} GiB); "
                    "use fewer --rows"
                )
            transport.broadcast([np.zeros(1, np.uint64)])  # line up the parties
            made = hm3_offline.generate(transport, record.requests, f"bench-{seed}", tuples)
            source: Any = made.source
            offline = made.seconds
            bill = {name: entry.line() for name, entry in made.bill.items()}
            tuple_bytes = sum(entry.bytes for entry in made.bill.values())
            offline_sent, offline_rounds = made.sent, made.rounds
        else:
            dealer = Dealer(len(addresses), seed=seed + 1, only_party=index)
            # Pre-generate the whole plan when it fits in memory; otherwise generate
            # lazily and subtract this party's generation time from its wall time.
            lazy = tuple_bytes > PREFETCH_LIMIT
            started = time.perf_counter()
            if not lazy:
                dealer.prefetch(record.requests)
            offline = time.perf_counter() - started
            source = dealer.source(index)
        transport.broadcast([np.zeros(1, np.uint64)])  # line up the parties
        sent, rounds = transport.bytes_sent, transport.rounds
        started = time.perf_counter()
        # The replicated path's pairwise keys are agreed per job: inside the timed run.
        party = Party(index, transport, source, _replicated(transport, sharing))
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
                bill,
                offline_sent,
                offline_rounds,
            )
        )
        transport.close()
    except BaseException as error:
        pipe.send(error)
        if not isinstance(error, BenchError):  # a BenchError is told without a traceback
            raise


def _replicated(transport: SocketTransport, sharing: str) -> Replicated | None:
    """The honest-majority path's keys (1 round), or None for the additive path."""
    return Replicated.agree(transport, AesCtrPrf()) if sharing == "replicated" else None


def default_sharing(tuples: str, parties: int) -> str:
    """The path a deployment takes: replicated for three parties with hm3, else additive."""
    return "replicated" if tuples == "hm3" and parties == 3 else "additive"


def run_case(
    name: str,
    parties: int,
    rows: int,
    groups: int,
    partitions: int,
    key_bits: int,
    seed: int,
    tuples: str = "dealer",
    net: str | None = None,
    sharing: str | None = None,
    **options: Any,
) -> dict[str, Any]:
    sharing = sharing or default_sharing(tuples, parties)
    if sharing == "replicated" and parties != 3:
        raise BenchError("--sharing replicated is the three-party honest-majority path")
    case = CASES[name](
        rows=rows, groups=groups, partitions=partitions, key_bits=key_bits, **options
    )
    rng = np.random.default_rng(seed)
    plain = case.make_input(rng)
    started = time.perf_counter()
    expected = case.baseline(plain)
    baseline = time.perf_counter() - started

    shared_parts = case.share_partitions(plain, parties, rng)
    shape = netns.SHAPES[net] if net is not None else None
    with _networks(parties, shape) as networks:
        all_reports = _run_parties(case, shared_parts, parties, seed, tuples, networks, sharing)
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
            _merge_bills([part[i].bill for part in by_part]),
            sum(part[i].offline_sent for part in by_part),
            max(part[i].offline_rounds for part in by_part),
        )
        for i in range(parties)
    ]
    online = max(r.online_seconds for r in reports)
    offline = max(r.offline_seconds for r in reports)
    line = {
        "case": name,
        "parties": parties,
        "rows": rows,
        "groups": groups,
        "partitions": partitions,
        **options,
        "tuples": tuples,
        "sharing": sharing,
        "online_seconds": round(online, 4),
        "offline_seconds": round(offline, 4),
        **({"total_seconds": round(online + offline, 4)} if tuples != "dealer" else {}),
        "tuple_bytes_per_party": max(r.tuple_bytes for r in reports),
        "tuple_bill": _bill_line([r.bill for r in reports]),
        "baseline_seconds": round(baseline, 6),
        "ratio_to_baseline": round(online / max(baseline, 1e-9), 1),
        "bytes_per_party": max(r.bytes_sent for r in reports),
        "bytes_per_row_per_party": round(max(r.bytes_sent for r in reports) / max(rows, 1), 2),
        "rounds": max(r.rounds for r in reports),
        "rows_per_second": round(rows / max(online, 1e-9)),
    }
    if tuples != "dealer":
        line["offline_bytes_per_party"] = max(r.offline_sent for r in reports)
        line["offline_rounds"] = max(r.offline_rounds for r in reports)
    if shape is not None:
        line.update(_floors(shape, reports, online, offline, tuples != "dealer"))
    line["correct"] = bool(correct)
    return line


@contextlib.contextmanager
def _networks(parties: int, shape: netns.Shape | None) -> Iterator[list[tuple[str, str]] | None]:
    """One shaped namespace per party (removed on exit, also on Ctrl-C), or None: loopback."""
    if shape is None:
        yield None
        return
    with netns.shaped_networks(parties, shape) as networks:
        yield networks


def _run_parties(
    case: Case,
    shared_parts: list[Any],
    parties: int,
    seed: int,
    tuples: str,
    networks: list[tuple[str, str]] | None,
    sharing: str = "additive",
) -> list[PartyReport]:
    """Every partition's parties as processes; their reports, partition-major.

    A party that fails stops the run: the others are killed rather than left
    waiting for it, and its error is raised here.
    """
    context = mp.get_context("fork")
    pipes, processes = [], []
    budget = _memory_available() * HM3_MEMORY_SHARE / (parties * len(shared_parts))
    try:
        for partition, part_inputs in enumerate(shared_parts):
            if networks is None:
                addresses = [("127.0.0.1", port) for port in free_ports(parties)]
            else:  # a fresh namespace per party: any port is free there
                addresses = [(public, 20000 + partition) for _, public in networks]
            for index in range(parties):
                namespace = networks[index][0] if networks is not None else None
                parent, child = context.Pipe(duplex=False)
                process = context.Process(
                    target=party_main,
                    args=(
                        *(index, addresses, case, part_inputs, seed, child),
                        *(tuples, namespace, budget, sharing),
                    ),
                    daemon=True,
                )
                process.start()
                child.close()
                pipes.append(parent)
                processes.append(process)
        reports: dict[int, PartyReport] = {}
        while len(reports) < len(pipes):
            for ready in wait([p for k, p in enumerate(pipes) if k not in reports]):
                number = pipes.index(ready)  # type: ignore[arg-type]
                try:
                    report = ready.recv()  # type: ignore[union-attr]
                except EOFError:
                    code = processes[number].exitcode
                    report = RuntimeError(f"party process {number} died (exit code {code})")
                if isinstance(report, BaseException):
                    raise report
                reports[number] = report
        return [reports[k] for k in range(len(pipes))]
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()
            process.join()


def _memory_available() -> float:
    """Bytes of memory available now (``MemAvailable``), or no limit where it is unknown."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        with open("/proc/meminfo") as meminfo:
            line = next(line for line in meminfo if line.startswith("MemAvailable:"))
        return float(line.split()[1]) * 1024
    return float("inf")


def _merge_bills(bills: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """One party's bill over its partitions: amounts add up, rounds and seconds overlap."""
    merged: dict[str, dict[str, Any]] = {}
    for bill in bills:
        for kind, entry in bill.items():
            into = merged.setdefault(kind, {})
            for key, value in entry.items():
                combine = max if key in ("rounds", "seconds") else (lambda a, b: a + b)
                into[key] = combine(into[key], value) if key in into else value
    return merged


def _bill_line(bills: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """The parties' bills as one: the busiest party's figure of each (kind, field)."""
    line: dict[str, dict[str, Any]] = {}
    for bill in bills:
        for kind, entry in bill.items():
            into = line.setdefault(kind, {})
            for key, value in entry.items():
                into[key] = max(into.get(key, value), value)
    for entry in line.values():
        if "seconds" in entry:
            entry["seconds"] = round(entry["seconds"], 4)
    return dict(sorted(line.items()))


def _floors(
    shape: netns.Shape, reports: list[PartyReport], online: float, offline: float, hm3: bool
) -> dict[str, Any]:
    """The physical floors (module docstring) and the measured times' ratios to them."""

    def floor_of(sent: int, rounds: int) -> float:
        # bytes at each party's uplink rate, and one one-way latency per round
        return sent / (shape.rate_bits / 8) + rounds * shape.rtt_seconds / 2

    floor = floor_of(max(r.bytes_sent for r in reports), max(r.rounds for r in reports))
    out: dict[str, Any] = {
        "net": shape.name,
        "rate_mbit": round(shape.rate_bits / 1e6),
        "rtt_ms": round(shape.rtt_seconds * 1e3, 3),
        "floor_seconds": round(floor, 4),
        "ratio_to_floor": round(online / max(floor, 1e-9), 2),
    }
    if hm3:
        offline_floor = floor_of(
            max(r.offline_sent for r in reports), max(r.offline_rounds for r in reports)
        )
        out["offline_floor_seconds"] = round(offline_floor, 4)
        out["offline_ratio_to_floor"] = round(offline / max(offline_floor, 1e-9), 2)
    return out


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    if arguments[:1] == ["gen-triples"] and "ot" in arguments:  # the ot generator, n processes
        import ot_bench

        return ot_bench.main(arguments[1:])
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
    parser.add_argument(
        "--tuples",
        choices=["dealer", "hm3", "ot"],
        default="dealer",
        help="hm3 (three parties) or ot (any number, no dealer): the parties generate "
        "the tuple plan in the run (offline_seconds)",
    )
    parser.add_argument(
        "--net",
        choices=sorted(netns.SHAPES),
        help="each party in its own network namespace, shaped (needs root and iproute2)",
    )
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument(
        "--sharing",
        choices=["additive", "replicated"],
        help="online path (default: replicated for --tuples hm3, three parties; else additive)",
    )
    parser.add_argument(
        "--sort", choices=["auto", "radix", "quick"], default="auto", help="sort only"
    )
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
    if args.tuples == "hm3" and args.parties != 3:
        parser.error("--tuples hm3 is the three-party honest-majority generator: --parties 3")
    if args.net is not None:
        reason = netns.available(shaping=True)
        if reason is not None:
            parser.error(f"--net {args.net} runs the parties in network namespaces: {reason}")
        # A SIGTERM unwinds like Ctrl-C, so the namespaces are removed.  Ctrl-C itself
        # too, even when started in the background of a script (which ignores SIGINT).
        signal.signal(signal.SIGTERM, lambda _signal, _frame: sys.exit(143))
        signal.signal(signal.SIGINT, signal.default_int_handler)
    options: dict[str, Any] = {}
    if args.case == "groupby":
        options = {"padding": "domain" if args.dp else args.padding, "dp": args.dp}
    if args.case == "sort":
        options = {"sort": args.sort}
    try:
        result = run_case(
            args.case,
            args.parties,
            args.rows,
            args.groups,
            args.partitions,
            args.key_bits,
            args.seed,
            args.tuples,
            args.net,
            args.sharing,
            **options,
        )
    except netns.NetworkError as error:
        sys.exit(f"bench/run.py: --net {args.net}: {error}")
    except BenchError as error:
        sys.exit(f"bench/run.py: {error}")
    except KeyboardInterrupt:
        sys.exit("bench/run.py: interrupted" + (" (namespaces removed)" if args.net else ""))
    print(json.dumps(result), flush=True)
    return 0 if result["correct"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
