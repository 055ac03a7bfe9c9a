"""Secret-store benchmarks: share upload throughput and metadata latency over HTTP.

    python bench/run.py store-upload [--rows N] [--columns 4] [--backend local|s3|both]
                                     [--tls off|on|both]
    python bench/run.py store-meta [--clients 50] [--requests 200] [--datasets 100]

``store-upload`` starts a secret-store (``python -m tally.secret_store serve``: uvicorn
with httptools/uvloop) on loopback, creates a dataset of ``rows × columns`` uint64
shares and uploads every column over HTTP (one connection per column, concurrently),
then commits; one JSON line per backend with ``mb_per_s`` (10^6 bytes per second,
from creating the dataset to the commit's answer; the median of ``--repeat`` runs).
``--tls both`` runs each backend over plaintext HTTP and over HTTPS (a loopback
certificate from a fresh CA) back to back, and prints ``https_vs_http``.
The S3 backend is a ``weed mini`` started for the run (``tests.servers``).

``store-meta`` starts a secret-store with SQLite and a local directory, commits
``--datasets`` small datasets, then ``--clients`` concurrent keep-alive clients each
send ``--requests`` metadata GETs; one JSON line with ``p50_ms``, ``p99_ms``, ``rps``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import http.client
import json
import os
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.servers import free_port, wait_for_port, weed_mini  # noqa: E402

TOKEN = "bench-token-0123456789abcdefghij"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@contextlib.contextmanager
def https_files() -> Iterator[tuple[dict[str, str], ssl.SSLContext]]:
    """A loopback certificate: the secret-store's HTTPS env, and a client context."""
    from tally.common.tls import write_test_pki

    with tempfile.TemporaryDirectory(prefix="tally-bench-pki-") as directory:
        paths = write_test_pki(Path(directory), [], loopback=["rest-bench"])
        ca, cert, key = paths["rest-bench"]
        env = {"TALLY_SECRET_STORE_HTTPS_CERT": str(cert), "TALLY_SECRET_STORE_HTTPS_KEY": str(key)}
        yield env, ssl.create_default_context(cafile=str(ca))


@contextlib.contextmanager
def secret_store(env: dict[str, str], workers: int = 1) -> Iterator[int]:
    """A secret-store process on a free loopback port; yields the port."""
    port = free_port()
    tokens = json.dumps([{"identity": "bench", "token": TOKEN}])
    full_env = {**os.environ, "TALLY_SECRET_STORE_TOKENS": tokens, **env}
    command = [sys.executable, "-m", "tally.secret_store", "serve", "--port", str(port)]
    command += ["--workers", str(workers), "--log-level", "warning"]
    process = subprocess.Popen(command, env=full_env)
    try:
        wait_for_port(port, process, 60)
        yield port
    finally:
        process.terminate()
        process.wait(30)


def request(
    port: int,
    method: str,
    url: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    tls: ssl.SSLContext | None = None,
) -> Any:
    """One HTTP(S) request; the JSON answer (raises on an error status)."""
    connection = (
        http.client.HTTPSConnection("127.0.0.1", port, timeout=300, context=tls)
        if tls is not None
        else http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    )
    all_headers = {**AUTH, **(headers or {})}
    if isinstance(body, dict):
        body = json.dumps(body).encode()
        all_headers["Content-Type"] = "application/json"
    connection.request(method, url, body=body, headers=all_headers)
    response = connection.getresponse()
    payload = response.read()
    connection.close()
    if response.status >= 400:
        raise RuntimeError(f"{method} {url}: {response.status} {payload[:300]!r}")
    return json.loads(payload) if payload else None


def upload_dataset(
    port: int, columns: list[np.ndarray], name: str, tls: ssl.SSLContext | None = None
) -> float:
    """Create, upload (one thread per column) and commit; seconds taken."""
    spec = {
        "name": name,
        "columns": [{"name": f"c{index}", "kind": "int"} for index in range(len(columns))],
        "rows": len(columns[0]),
    }
    bodies = [memoryview(column.astype("<u8", copy=False)).cast("B") for column in columns]
    checksums = [hashlib.sha256(body).hexdigest() for body in bodies]
    started = time.perf_counter()
    dataset = request(port, "POST", "/v1/datasets", spec, tls=tls)
    errors: list[BaseException] = []

    def put(index: int) -> None:
        try:
            request(
                port,
                "PUT",
                f"/v1/datasets/{dataset['id']}/columns/c{index}",
                bodies[index],
                {"Content-Type": "application/octet-stream", "Tally-Sha256": checksums[index]},
                tls,
            )
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=put, args=(index,)) for index in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    request(port, "POST", f"/v1/datasets/{dataset['id']}/commit", tls=tls)
    return time.perf_counter() - started


def bench_upload(args: argparse.Namespace) -> list[dict[str, Any]]:
    """``store-upload``: one result per backend."""
    rng = np.random.default_rng(2026)
    columns = [rng.integers(0, 2**64, args.rows, dtype=np.uint64) for _ in range(args.columns)]
    backends = ["local", "s3"] if args.backend == "both" else [args.backend]
    modes = ["off", "on"] if args.tls == "both" else [args.tls]
    results = []
    for backend in backends:
        by_mode: dict[str, float] = {}
        for mode in modes:
            result = _upload_run(args, columns, backend, mode == "on")
            by_mode[mode] = result["mb_per_s"]
            results.append(result)
        if len(by_mode) == 2:
            results[-1]["https_vs_http"] = round(by_mode["on"] / by_mode["off"], 3)
    return results


def _upload_run(
    args: argparse.Namespace, columns: list[np.ndarray], backend: str, https: bool
) -> dict[str, Any]:
    total_bytes = args.rows * args.columns * 8
    with contextlib.ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tally-bench-")))
        env = {"TALLY_SECRET_STORE_DATABASE_URL": f"sqlite:///{root}/metadata.db"}
        tls: ssl.SSLContext | None = None
        if https:
            https_env, tls = stack.enter_context(https_files())
            env |= https_env
        if backend == "local":
            env["TALLY_SECRET_STORE_BLOB_DIR"] = str(root / "blobs")
        else:
            s3 = stack.enter_context(weed_mini())
            env |= {
                "TALLY_SECRET_STORE_S3_ENDPOINT": s3.endpoint,
                "TALLY_SECRET_STORE_S3_ACCESS_KEY": s3.access_key,
                "TALLY_SECRET_STORE_S3_SECRET_KEY": s3.secret_key,
                "TALLY_SECRET_STORE_S3_BUCKET": s3.shared_bucket,
            }
        port = stack.enter_context(secret_store(env))
        upload_dataset(port, [column[:1000] for column in columns], "warm-up", tls)
        timings = [upload_dataset(port, columns, f"run-{run}", tls) for run in range(args.repeat)]
    best, median = min(timings), float(np.median(timings))
    return {
        "case": "store-upload",
        "backend": backend,
        "https": https,
        "rows": args.rows,
        "columns": args.columns,
        "bytes": total_bytes,
        "seconds": round(median, 4),
        "seconds_all": [round(timing, 4) for timing in timings],
        "mb_per_s": round(total_bytes / median / 1e6, 1),
        "mb_per_s_best": round(total_bytes / best / 1e6, 1),
    }


async def _client(port: int, urls: list[str], latencies: list[float]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for url in urls:
            message = (
                f"GET {url} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
            ).encode()
            started = time.perf_counter()
            writer.write(message)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"GET {url}: {head[:40]!r}")
    finally:
        writer.close()


async def _load(port: int, clients: int, per_client: list[list[str]]) -> tuple[list[float], float]:
    latencies: list[float] = []
    started = time.perf_counter()
    await asyncio.gather(*(_client(port, per_client[index], latencies) for index in range(clients)))
    return latencies, time.perf_counter() - started


def bench_meta(args: argparse.Namespace) -> dict[str, Any]:
    """``store-meta``: metadata GET latency under concurrent clients."""
    with tempfile.TemporaryDirectory(prefix="tally-bench-") as root:
        env = {
            "TALLY_SECRET_STORE_DATABASE_URL": f"sqlite:///{root}/metadata.db",
            "TALLY_SECRET_STORE_BLOB_DIR": f"{root}/blobs",
        }
        with secret_store(env, workers=args.workers) as port:
            rng = np.random.default_rng(1)
            ids = []
            for index in range(args.datasets):
                tags = {"region": ["eu", "us", "apac"][index % 3], "year": str(2020 + index % 5)}
                column = rng.integers(0, 2**64, 16, dtype=np.uint64)
                spec = {
                    "name": f"d{index}",
                    "columns": [{"name": "v", "kind": "int"}],
                    "rows": 16,
                    "tags": tags,
                }
                dataset = request(port, "POST", "/v1/datasets", spec)
                body = column.tobytes()
                request(
                    port,
                    "PUT",
                    f"/v1/datasets/{dataset['id']}/columns/v",
                    body,
                    {
                        "Content-Type": "application/octet-stream",
                        "Tally-Sha256": hashlib.sha256(body).hexdigest(),
                    },
                )
                request(port, "POST", f"/v1/datasets/{dataset['id']}/commit")
                ids.append(dataset["id"])
            plans = [
                [f"/v1/datasets/{ids[int(rng.integers(len(ids)))]}" for _ in range(args.requests)]
                for _ in range(args.clients)
            ]
            asyncio.run(_load(port, args.clients, [plan[:10] for plan in plans]))  # warm-up
            latencies, seconds = asyncio.run(_load(port, args.clients, plans))
    ordered = np.sort(np.array(latencies)) * 1000
    return {
        "case": "store-meta",
        "clients": args.clients,
        "requests": len(latencies),
        "workers": args.workers,
        "p50_ms": round(float(np.percentile(ordered, 50)), 2),
        "p99_ms": round(float(np.percentile(ordered, 99)), 2),
        "max_ms": round(float(ordered[-1]), 2),
        "rps": round(len(latencies) / seconds),
    }


def main(argv: list[str]) -> int:
    """Dispatch ``store-upload`` / ``store-meta``; print one JSON line per result."""
    parser = argparse.ArgumentParser(prog="bench/run.py")
    parser.add_argument("case", choices=["store-upload", "store-meta"])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--columns", type=int, default=4)
    parser.add_argument("--backend", choices=["local", "s3", "both"], default="both")
    parser.add_argument("--tls", choices=["off", "on", "both"], default="both")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=200, help="GETs per client")
    parser.add_argument("--datasets", type=int, default=100)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    args = parser.parse_args(argv)
    results = bench_upload(args) if args.case == "store-upload" else [bench_meta(args)]
    for result in results:
        print(json.dumps(result), flush=True)
    return 0
