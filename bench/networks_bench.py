"""A group-by job with the parties in separate network namespaces vs all on loopback.

    python bench/networks_bench.py [--rows N] [--groups G] [--partitions P] [--repeat K]

Two embedded deployments (3 parties, hm3 tuples, every service a process), started
side by side: one with every party on loopback, one with each party in its own
network namespace (:mod:`tally.netns`: the same private addresses in each,
only public addresses routed, every worker connection through the accepting party's
gateway).  The same job (upload, group-by sum and count over P partitions per party)
runs on each, alternately, K times.  Each JSON line carries the job's online seconds
(the slowest worker's, from its first agreed mesh to its last round), the wall
seconds of the whole job, whether the result matched pandas, and the ratio of the
namespaced online time to the loopback one of the same round.  Needs root and iproute2.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from tally import netns
from tally.local_deployment import LocalDeployment


def online_seconds(deployment: LocalDeployment, job_id: str) -> float:
    """The slowest worker's online time (every party, every partition)."""
    times = []
    for party in range(deployment.parties):
        jobs = Path(deployment.dir, f"party-{party}", "execution", "jobs", job_id)
        for path in jobs.glob("w*.json"):
            times.append(float(json.loads(path.read_text()).get("online_seconds") or 0.0))
    return max(times)


def run_job(deployment: LocalDeployment, frame: pd.DataFrame, partitions: int, name: str) -> dict:
    with deployment.connect(show_progress=False) as cluster:
        cluster.upload(frame, name=name, partitions=partitions, keys=["key"])
        started = time.perf_counter()
        job = (
            cluster.table(name)
            .group_by("key")
            .agg(total=("amount", "sum"), n=("amount", "count"))
            .run()
        )
        job.wait(timeout=1800)
        result = job.result()
        wall = time.perf_counter() - started
    got = result.reset_index() if "key" not in result.columns else result
    got = got[["key", "total", "n"]].sort_values("key").reset_index(drop=True)
    expected = (
        frame.groupby("key")
        .agg(total=("amount", "sum"), n=("amount", "count"))
        .reset_index()
        .sort_values("key")
        .reset_index(drop=True)
    )
    correct = bool(
        (got["key"].astype(str).tolist() == expected["key"].astype(str).tolist())
        and np.array_equal(got["total"].astype(np.int64), expected["total"])
        and np.array_equal(got["n"].astype(np.int64), expected["n"])
    )
    return {"online_seconds": online_seconds(deployment, job.service_id), "wall_seconds": wall,
            "correct": correct}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--groups", type=int, default=100)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    reason = netns.available()
    if reason:
        sys.exit(f"networks_bench: {reason}")
    rng = np.random.default_rng(7)
    frame = pd.DataFrame(
        {
            "key": np.char.add("k", rng.integers(0, args.groups, args.rows).astype(str)),
            "amount": rng.integers(0, 1000, args.rows),
        }
    )
    ratios = []
    with tempfile.TemporaryDirectory() as root, netns.party_networks(3) as networks:
        quiet = lambda _text: None  # noqa: E731
        loopback = LocalDeployment(Path(root, "loopback"), tuples="hm3", log=quiet)
        separate = LocalDeployment(Path(root, "netns"), tuples="hm3", log=quiet, networks=networks)
        try:
            loopback.up(make_current=False)
            separate.up(make_current=False)
            for round_number in range(args.repeat):
                order = [("loopback", loopback), ("netns", separate)]
                if round_number % 2:
                    order.reverse()
                lines = {}
                for label, deployment in order:
                    line = run_job(deployment, frame, args.partitions, f"bench-{round_number}")
                    lines[label] = line
                ratio = lines["netns"]["online_seconds"] / lines["loopback"]["online_seconds"]
                ratios.append(ratio)
                for label, line in lines.items():
                    print(json.dumps({"case": "job-groupby-networks", "net": label,
                                      "rows": args.rows, "groups": args.groups,
                                      "partitions": args.partitions, "round": round_number,
                                      **line, "netns_over_loopback": round(ratio, 3)}))  # fmt: skip
        finally:
            loopback.purge()
            separate.purge()
    print(json.dumps({"case": "job-groupby-networks", "median_netns_over_loopback":
                      round(statistics.median(ratios), 3)}))  # fmt: skip


if __name__ == "__main__":
    main()
