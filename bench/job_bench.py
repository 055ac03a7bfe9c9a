"""Benchmark a group-by job through the execution services against the bare engine.

    python bench/run.py job-groupby [--rows 1000000] [--groups 1000] [--partitions 1]
                                    [--tuples dealer|hm3] [--rest-tls off|on|both]

Three parties on loopback, PartyLink over gRPC with mutual TLS.  Two providers' datasets
of rows/2 rows each, group-by key with ``--groups`` values, sum + count, padded to
``max_groups``.

* ``--tuples dealer`` (default): each party's execution service (and its job workers)
  is a process; inputs in the party's blob store, tuples from the seeded development
  dealer; the output is opened to the analyst through ``GET /v1/jobs/{id}/result``.
* ``--tuples hm3``: each party runs its secret-store, tuple-service and execution
  service as processes.  The providers upload over the secret-stores' REST API; the
  tuple-services' pools are filled with hm3 tuples first (``offline_seconds``, as a
  deployment's background replenishment would); the job reserves them (its dry plan's
  estimate), each worker reads its reservation into memory before the online phase
  (``prefetch_seconds``: mostly the tuple-services deriving the shuffle correlations),
  and the output is written as result datasets, which the analyst fetches from every
  secret-store and opens.

``--rest-tls on`` (with hm3) serves every REST listener over HTTPS (one loopback
certificate from a fresh CA, trusted by the services through ``REST_CA`` and by the
bench through ``SSL_CERT_FILE``); ``both`` runs plaintext and HTTPS REST in turns
(``--repeat`` pairs) and prints one line with both runs' times and the medians' ratios
``https_vs_http_end_to_end`` and ``https_vs_http_online``.

One JSON line:

* ``end_to_end_seconds``: from the first POST /v1/jobs to the reconstructed result
  (agreement, reservation, worker start-up and input loading, online phase,
  checkpoints, result write, the client fetching and adding the shares);
* ``online_seconds``: the slowest worker's online phase (mesh built to outputs).
  With the dealer, without the time its tuple source spent generating tuples, like
  the bare engine bench's lazy mode.  With hm3 it includes streaming the reserved
  tuples from the tuple-service (``tuple_io_seconds``; nothing is generated then);
  ``online_without_tuple_io_seconds`` leaves that out;
* ``engine_online_seconds``: ``bench/run.py groupby`` (same rows, groups, sum + count,
  SocketTransport, no services, tuples in memory) in the same run;
  ``overhead`` = online / engine - 1.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.execution.cluster import Cluster  # noqa: E402
from tests.execution.deployment import Deployment  # noqa: E402

from tally.execution.planning import estimate_tuples  # noqa: E402
from tally.execution.results import combine_results  # noqa: E402
from tally.mpc.program import get_program  # noqa: E402
from tally.mpc.table import ColumnSpec, share_table  # noqa: E402

PREFETCH_BYTES = 3 << 30
"""Per worker: 10^6 rows, 1000 groups, sum + count reserve about 2.5 GB per party (the
shuffle correlations are 1.7 GB of it), all read before the online phase, as the bare
engine generates its tuples before it times the online phase."""


def _key_bits(groups: int) -> int:
    return max(1, int(np.ceil(np.log2(max(groups, 2)))))


def run_job(rows: int, groups: int, partitions: int, seed: int, tls: bool = True) -> dict[str, Any]:
    """Run the job once; returns the measurements and whether the result was correct."""
    import pandas as pd

    specs = {"key": ColumnSpec("key", bits=_key_bits(groups)), "value": ColumnSpec("int")}
    rng = np.random.default_rng(seed)
    root = Path(tempfile.mkdtemp(prefix="tally-job-bench-"))
    cluster = Cluster(root, tls=tls, peer_timeout=60.0, accept_timeout=60.0)
    try:
        cluster.start()
        frames = []
        for provider in ("provider-a", "provider-b"):
            plain = {
                "key": rng.integers(0, groups, rows // 2),
                "value": rng.integers(0, 1000, rows // 2),
            }
            frames.append(pd.DataFrame(plain))
            shares = share_table(plain, specs, 3)
            cluster.put(provider, [[s] for s in shares], specs, owner="alice")
        spec = {
            "id": "bench-groupby",
            "program": "groupby",
            "inputs": {"events": ["provider-a", "provider-b"]},
            "params": _params(groups),
            "outputs": {"result": {"kind": "open", "recipients": ["alice"]}},
            "partitions": partitions,
        }
        started = time.perf_counter()
        responses = cluster.submit(spec)
        if any(r.status_code != 201 for r in responses):
            raise RuntimeError([r.text for r in responses])
        states = cluster.wait("bench-groupby", timeout=600)
        results = [cluster.request(p, "GET", "/v1/jobs/bench-groupby/result") for p in range(3)]
        output = combine_results([r.json() for r in results])["result"]
        end_to_end = time.perf_counter() - started
        workers = [
            cluster.worker_status(p, "bench-groupby", w)
            for p in range(3)
            for w in range(partitions)
        ]
        correct = all(s["phase"] == "Succeeded" for s in states) and _matches(output, frames)
        online = max(w["online_seconds"] - w["tuple_seconds"] for w in workers)
        return {
            "end_to_end_seconds": round(end_to_end, 3),
            "online_seconds": round(online, 3),
            "tuple_generation_seconds": round(max(w["tuple_seconds"] for w in workers), 3),
            **_figures(workers, states),
            "correct": bool(correct),
        }
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


def _figures(workers: list[dict[str, Any]], states: list[dict[str, Any]]) -> dict[str, Any]:
    """What both kinds of run report alike: the slowest worker's, the busiest party's."""
    return {
        "input_load_seconds": round(max(w["load_seconds"] for w in workers), 3),
        "checkpoint_write_seconds": round(max(w["checkpoint_seconds"] for w in workers), 3),
        "stages": states[0]["stages_total"],
        "bytes_per_party": max(s["bytes_sent"] for s in states),
        "rounds": max(s["rounds"] for s in states),
    }


def _params(groups: int) -> dict[str, Any]:
    return {
        "keys": ["key"],
        "aggregations": {"total": ["value", "sum"], "n": ["value", "count"]},
        "max_groups": groups,
    }


def _fill_pools(deployment: Deployment, needs: dict[str, int]) -> float:
    """Generate ``needs`` hm3 tuples at every party's tuple-service; returns the seconds."""
    started = time.perf_counter()
    for kind, count in needs.items():
        if kind != "shuffle" and count > 0:
            reply = deployment.tuple_service(
                0, "POST", f"/v1/pools/{kind}/generate", json={"tuples": count}, timeout=1800.0
            )
            reply.raise_for_status()
    return time.perf_counter() - started


def run_services_job(
    rows: int, groups: int, partitions: int, seed: int, tls: bool = True, rest_tls: bool = False
) -> dict[str, Any]:
    """``--tuples hm3``: secret-stores, tuple-services and execution services per party."""
    import pandas as pd

    specs = {"key": ColumnSpec("key", bits=_key_bits(groups)), "value": ColumnSpec("int")}
    rng = np.random.default_rng(seed)
    root = Path(tempfile.mkdtemp(prefix="tally-job-bench-"))
    deployment = Deployment(
        root,
        chunk_size=1 << 20,
        tls=tls,
        rest_tls=rest_tls,
        peer_timeout=60.0,
        accept_timeout=60.0,
        execution_env={
            "TALLY_EXECUTION_IO_TIMEOUT_S": "600",
            "TALLY_EXECUTION_TUPLE_PREFETCH_BYTES": str(PREFETCH_BYTES),
        },
    )
    try:
        deployment.start()
        frames, ids = [], []
        for provider in ("provider-a", "provider-b"):
            plain = {
                "key": rng.integers(0, groups, rows // 2),
                "value": rng.integers(0, 1000, rows // 2),
            }
            frames.append(pd.DataFrame(plain))
            ids.append(deployment.upload(provider, share_table(plain, specs, 3), specs, "alice"))
        worker_rows = rows // partitions
        needs = estimate_tuples(  # three parties on hm3: the replicated path's plan
            get_program("groupby"),
            {"events": (specs, worker_rows)},
            _params(groups),
            3,
            replicated=True,
        )
        offline = _fill_pools(deployment, {k: v * partitions for k, v in needs.items()})
        spec = {
            "id": "bench-groupby",
            "program": "groupby",
            "inputs": {"events": ids},
            "params": _params(groups),
            "outputs": {"result": {"kind": "shares", "recipients": ["alice"]}},
            "partitions": partitions,
        }
        started = time.perf_counter()
        responses = deployment.execution.submit(spec)
        if any(r.status_code != 201 for r in responses):
            raise RuntimeError([r.text for r in responses])
        states = deployment.execution.wait("bench-groupby", timeout=1200)
        if any(s["phase"] != "Succeeded" for s in states):
            raise RuntimeError([s["reason"] for s in states])
        parts = [deployment.open_result(d) for d in states[0]["results"]["result"]]
        output = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        end_to_end = time.perf_counter() - started
        workers = [
            deployment.execution.worker_status(p, "bench-groupby", w)
            for p in range(3)
            for w in range(partitions)
        ]
        timings = states[0]["timings"]
        correct = _matches(output, frames)
        online = max(w["online_seconds"] for w in workers)
        return {
            "end_to_end_seconds": round(end_to_end, 3),
            "online_seconds": round(online, 3),
            "online_without_tuple_io_seconds": round(
                max(w["online_seconds"] - w["tuple_seconds"] for w in workers), 3
            ),
            "tuple_io_seconds": round(max(w["tuple_seconds"] for w in workers), 3),
            "prefetch_seconds": round(max(w["prefetch_seconds"] for w in workers), 3),
            "offline_seconds": round(offline, 3),
            "tuples_reserved_per_worker": needs,
            "reserve_seconds": round(timings["reserved"] - timings["accepted"], 3),
            "rest_tls": rest_tls,
            **_figures(workers, states),
            "correct": bool(correct),
        }
    finally:
        deployment.stop()
        shutil.rmtree(root, ignore_errors=True)


def _matches(output: dict[str, Any], frames: list[Any]) -> bool:
    import pandas as pd

    expected = pd.concat(frames).groupby("key").agg(total=("value", "sum"), n=("value", "count"))
    got = pd.DataFrame(output).set_index("key").sort_index()
    return (
        np.array_equal(got.index.to_numpy(), expected.index.to_numpy())
        and np.array_equal(got["total"].to_numpy(), expected["total"].to_numpy())
        and np.array_equal(got["n"].to_numpy(), expected["n"].to_numpy())
    )


def main(
    rows: int,
    groups: int,
    partitions: int,
    seed: int,
    tls: bool = True,
    tuples: str = "dealer",
    rest_tls: bool = False,
) -> dict[str, Any]:
    """The job measurement plus the bare engine on the same sizes, as one JSON-able dict."""
    from run import default_sharing, run_case  # bench/run.py, on sys.path when run from it

    if tuples == "hm3":
        job = run_services_job(rows, groups, partitions, seed, tls, rest_tls)
    else:
        job = run_job(rows, groups, partitions, seed, tls)
    # The bare engine on the path the job's workers take (replicated for hm3).
    sharing = default_sharing(tuples, 3)
    engine = run_case("groupby", 3, rows, groups, partitions, 0, seed, sharing=sharing)
    overhead = job["online_seconds"] / max(engine["online_seconds"], 1e-9) - 1
    extra = {}
    if "online_without_tuple_io_seconds" in job:
        without_io = job["online_without_tuple_io_seconds"] / max(engine["online_seconds"], 1e-9)
        extra["overhead_without_tuple_io"] = round(without_io - 1, 3)
    return {
        "case": "job-groupby",
        "parties": 3,
        "rows": rows,
        "groups": groups,
        "partitions": partitions,
        "tuples": tuples,
        "sharing": sharing,
        "tls": tls,
        **job,
        "engine_online_seconds": engine["online_seconds"],
        "engine_bytes_per_party": engine["bytes_per_party"],
        "overhead": round(overhead, 3),
        **extra,
        "correct": job["correct"] and engine["correct"],
    }


def compare_rest_tls(
    rows: int, groups: int, partitions: int, seed: int, repeat: int
) -> dict[str, Any]:
    """``--rest-tls both``: the hm3 job with plaintext and with HTTPS REST, taking turns.

    Every REST call (uploads, job submission, reservations, tuple reads, result writes and
    fetches) is HTTPS in the second kind of run; PartyLink is mutual TLS in both.  The
    ratios are medians over ``repeat`` pairs.
    """
    runs: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
    for _ in range(repeat):
        for rest_tls in (False, True):
            runs[rest_tls].append(run_services_job(rows, groups, partitions, seed, True, rest_tls))

    def median(rest_tls: bool, key: str) -> float:
        return float(np.median([run[key] for run in runs[rest_tls]]))

    return {
        "case": "job-groupby-rest-tls",
        "parties": 3,
        "rows": rows,
        "groups": groups,
        "partitions": partitions,
        "tuples": "hm3",
        "repeat": repeat,
        "end_to_end_seconds": {
            "http": [r["end_to_end_seconds"] for r in runs[False]],
            "https": [r["end_to_end_seconds"] for r in runs[True]],
        },
        "online_seconds": {
            "http": [r["online_seconds"] for r in runs[False]],
            "https": [r["online_seconds"] for r in runs[True]],
        },
        "https_vs_http_end_to_end": round(
            median(True, "end_to_end_seconds") / median(False, "end_to_end_seconds"), 3
        ),
        "https_vs_http_online": round(
            median(True, "online_seconds") / median(False, "online_seconds"), 3
        ),
        "correct": all(r["correct"] for kind in runs.values() for r in kind),
    }


def cli(argv: list[str]) -> int:
    """``bench/run.py job-groupby ...``: print one JSON line; exit 1 if the result is wrong."""
    parser = argparse.ArgumentParser(prog="bench/run.py job-groupby", description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--groups", type=int, default=1000)
    parser.add_argument("--partitions", type=int, default=1)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--plaintext", action="store_true", help="PartyLink without TLS")
    parser.add_argument(
        "--tuples",
        choices=["dealer", "hm3"],
        default="dealer",
        help="dealer: execution services only; hm3: secret-stores and tuple-services too",
    )
    parser.add_argument(
        "--rest-tls",
        choices=["off", "on", "both"],
        default="off",
        help="with --tuples hm3: HTTPS on every REST listener; both: plaintext and HTTPS "
        "runs taking turns (--repeat pairs), with their ratio",
    )
    parser.add_argument("--repeat", type=int, default=2, help="pairs of runs for --rest-tls both")
    args = parser.parse_args(argv)
    if args.rest_tls != "off" and args.tuples != "hm3":
        parser.error("--rest-tls needs --tuples hm3 (the dealer path has no secret-store)")
    if args.rest_tls == "both":
        result = compare_rest_tls(args.rows, args.groups, args.partitions, args.seed, args.repeat)
    else:
        result = main(
            args.rows,
            args.groups,
            args.partitions,
            args.seed,
            not args.plaintext,
            args.tuples,
            args.rest_tls == "on",
        )
    print(json.dumps(result), flush=True)
    return 0 if result["correct"] else 1
