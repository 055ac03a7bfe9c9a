"""Benchmark a group-by job through the execution services against the bare engine.

    python bench/run.py job-groupby [--rows 1000000] [--groups 1000] [--partitions 1]

Three parties, each party's execution service (and its job workers) a separate process
on loopback, PartyLink over gRPC with mutual TLS.  Two providers' datasets of rows/2 rows
each, group-by key with ``--groups`` values, sum + count, padded to ``max_groups``.
One JSON line:

* ``end_to_end_seconds``: from the first POST /v1/jobs to the reconstructed result
  (agreement, reservation, worker start-up and input loading, online phase,
  checkpoints, result write, the client fetching and adding the shares);
* ``online_seconds``: the slowest worker's online phase (mesh built to outputs),
  without the time its tuple source spent generating tuples, like the bare
  engine bench's lazy mode;
* ``engine_online_seconds``: ``bench/run.py groupby`` (same rows, groups, sum + count,
  SocketTransport, no services) in the same run; ``overhead`` = online / engine - 1.
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

from tally.execution.results import combine_results  # noqa: E402
from tally.mpc.table import ColumnSpec, share_table  # noqa: E402


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
            "params": {
                "keys": ["key"],
                "aggregations": {"total": ["value", "sum"], "n": ["value", "count"]},
                "max_groups": groups,
            },
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
        expected = (
            pd.concat(frames).groupby("key").agg(total=("value", "sum"), n=("value", "count"))
        )
        got = pd.DataFrame(output).set_index("key").sort_index()
        correct = (
            all(s["phase"] == "Succeeded" for s in states)
            and np.array_equal(got.index.to_numpy(), expected.index.to_numpy())
            and np.array_equal(got["total"].to_numpy(), expected["total"].to_numpy())
            and np.array_equal(got["n"].to_numpy(), expected["n"].to_numpy())
        )
        online = max(w["online_seconds"] - w["tuple_seconds"] for w in workers)
        return {
            "end_to_end_seconds": round(end_to_end, 3),
            "online_seconds": round(online, 3),
            "tuple_generation_seconds": round(max(w["tuple_seconds"] for w in workers), 3),
            "input_load_seconds": round(max(w["load_seconds"] for w in workers), 3),
            "checkpoint_write_seconds": round(max(w["checkpoint_seconds"] for w in workers), 3),
            "stages": states[0]["stages_total"],
            "bytes_per_party": max(s["bytes_sent"] for s in states),
            "rounds": max(s["rounds"] for s in states),
            "correct": bool(correct),
        }
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


def main(rows: int, groups: int, partitions: int, seed: int, tls: bool = True) -> dict[str, Any]:
    """The job measurement plus the bare engine on the same sizes, as one JSON-able dict."""
    from run import run_case  # bench/run.py, on sys.path when run from it

    job = run_job(rows, groups, partitions, seed, tls)
    engine = run_case("groupby", 3, rows, groups, partitions, 0, seed)
    overhead = job["online_seconds"] / max(engine["online_seconds"], 1e-9) - 1
    return {
        "case": "job-groupby",
        "parties": 3,
        "rows": rows,
        "groups": groups,
        "partitions": partitions,
        "tuples": "dealer",
        "tls": tls,
        **job,
        "engine_online_seconds": engine["online_seconds"],
        "engine_bytes_per_party": engine["bytes_per_party"],
        "overhead": round(overhead, 3),
        "correct": job["correct"] and engine["correct"],
    }


def cli(argv: list[str]) -> int:
    """``bench/run.py job-groupby ...``: print one JSON line; exit 1 if the result is wrong."""
    parser = argparse.ArgumentParser(prog="bench/run.py job-groupby", description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--groups", type=int, default=1000)
    parser.add_argument("--partitions", type=int, default=1)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--plaintext", action="store_true", help="PartyLink without TLS")
    args = parser.parse_args(argv)
    result = main(args.rows, args.groups, args.partitions, args.seed, not args.plaintext)
    print(json.dumps(result), flush=True)
    return 0 if result["correct"] else 1
