"""Offline-phase benchmark: three tuple-services on loopback generate and store tuples.

    python bench/run.py gen-triples --tuples hm3 [--rows 33554432] [--chunk 1048576]

Starts three ``python -m tally.tuples`` processes (SQLite index, local blob
store, TupleLink on loopback), generates ``--rows`` Beaver triples through
the leader's REST API (generated *and* stored at all three parties before
the call returns), then edaBits(64), daBits and a shuffle correlation, and
prints one JSON line: ``rows`` (triples made), ``offline_seconds``,
``triples_per_second``, ``bytes_per_party_per_triple`` (TupleLink traffic of
the busiest party), and the same figures for the other kinds.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "tuples"))

from cluster import Cluster  # noqa: E402


def _sent(cluster: Cluster) -> list[int]:
    return [int(cluster.get(p, "/v1/link").json()["bytes_sent"]) for p in range(3)]


def _generate(cluster: Cluster, kind: str, count: int) -> tuple[float, int]:
    """Seconds to generate and store ``count`` tuples of ``kind``; max bytes sent by a party."""
    before = _sent(cluster)
    started = time.perf_counter()
    response = cluster.post(0, f"/v1/pools/{kind}/generate", {"tuples": count}, timeout=3600)
    seconds = time.perf_counter() - started
    if response.status_code != 200:
        raise RuntimeError(f"generating {kind} failed: {response.text}")
    after = _sent(cluster)
    return seconds, max(a - b for a, b in zip(after, before, strict=True))


def _shuffle(cluster: Cluster, rows: int) -> float:
    """Seconds for every party to derive its shuffle correlation for ``rows`` rows, 1 column."""
    response = cluster.post(0, "/v1/reservations", {"job_id": "bench", "tuples": {"shuffle": 1}})
    reservation = response.json()["reservation_id"]
    errors: list[str] = []

    def fetch(party: int) -> None:
        path = f"/v1/reservations/{reservation}/shuffles/0?rows={rows}&kinds=a"
        reply = cluster.get(party, path, timeout=600)
        if reply.status_code != 200 or len(reply.content) < 16 * rows:
            errors.append(reply.text[:200])

    threads = [threading.Thread(target=fetch, args=(p,)) for p in range(3)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise RuntimeError(f"shuffle failed: {errors}")
    return time.perf_counter() - started


def run(rows: int, chunk: int, edabits: int, shuffle_rows: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="tally-tuples-bench-") as root:
        cluster = Cluster(Path(root), chunk_size=chunk)
        try:
            cluster.start_all()
            _generate(cluster, "triples", chunk)  # opens the key session, warms up
            seconds, sent = _generate(cluster, "triples", rows)
            made = -(-rows // chunk) * chunk
            eda_seconds, eda_sent = _generate(cluster, "edabits:64", edabits)
            eda_made = -(-edabits // chunk) * chunk
            da_seconds, da_sent = _generate(cluster, "dabits", edabits)
            shuffle_seconds = _shuffle(cluster, shuffle_rows)
        finally:
            cluster.stop()
    return {
        "case": "gen-triples",
        "tuples": "hm3",
        "parties": 3,
        "rows": made,
        "offline_seconds": round(seconds, 4),
        "triples_per_second": round(made / seconds),
        "bytes_per_party_per_triple": round(sent / made, 4),
        "edabits64": eda_made,
        "edabits64_seconds": round(eda_seconds, 4),
        "edabits64_per_second": round(eda_made / eda_seconds),
        "edabits64_bytes_per_party": round(eda_sent / eda_made, 3),
        "dabits": eda_made,
        "dabits_per_second": round(eda_made / da_seconds),
        "dabits_bytes_per_party": round(da_sent / eda_made, 3),
        "shuffle_rows": shuffle_rows,
        "shuffle_seconds": round(shuffle_seconds, 4),
        "shuffle_rows_per_second": round(shuffle_rows / shuffle_seconds),
        "shuffle_bytes_per_party": 0,
        "chunk_tuples": chunk,
        "stored": "sqlite index + local blob store, 3 processes on loopback",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="tuple generation benchmark (hm3, 3 parties)")
    parser.add_argument("--tuples", choices=["hm3"], default="hm3")
    parser.add_argument("--rows", type=int, default=32 << 20, help="triples to generate")
    parser.add_argument("--chunk", type=int, default=1 << 20, help="tuples per chunk")
    parser.add_argument("--edabits", type=int, default=2 << 20)
    parser.add_argument("--shuffle-rows", type=int, default=1 << 20)
    parser.add_argument("--parties", type=int, default=3, choices=[3])
    args = parser.parse_args(argv)
    result = run(args.rows, args.chunk, args.edabits, args.shuffle_rows)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
