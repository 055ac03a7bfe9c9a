"""Three tuple-services as separate OS processes on loopback, for the tuple-service tests."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


@dataclass
class Cluster:
    """Start, stop, kill and restart three tuple-service processes."""

    root: Path
    database_urls: list[str] | None = None
    chunk_size: int = 4096
    pools: list[dict[str, Any]] = field(default_factory=list)
    replenish: bool = False
    extra_env: dict[str, str] = field(default_factory=dict)
    processes: list[subprocess.Popen[bytes] | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        ports = free_ports(6)
        self.grpc_ports, self.http_ports = ports[:3], ports[3:]
        self.processes = [None, None, None]

    def url(self, party: int) -> str:
        return f"http://127.0.0.1:{self.http_ports[party]}"

    def env(self, party: int) -> dict[str, str]:
        base = self.root / f"party{party}"
        database = (
            self.database_urls[party] if self.database_urls else f"sqlite:///{base / 'index.db'}"
        )
        env = dict(os.environ)
        env.update(
            {
                "TALLY_TUPLES_PARTY": str(party),
                "TALLY_TUPLES_PEERS": json.dumps([f"127.0.0.1:{port}" for port in self.grpc_ports]),
                "TALLY_TUPLES_HTTP_PORT": str(self.http_ports[party]),
                "TALLY_TUPLES_DATABASE_URL": database,
                "TALLY_TUPLES_BLOB_DIR": str(base / "chunks"),
                "TALLY_TUPLES_CHUNK_SIZE": str(self.chunk_size),
                "TALLY_TUPLES_POOLS": json.dumps(self.pools),
                "TALLY_TUPLES_REPLENISH": "true" if self.replenish else "false",
                "TALLY_TUPLES_REPLENISH_INTERVAL_S": "0.2",
                "TALLY_TUPLES_RPC_TIMEOUT_S": "30",
            }
        )
        env.update(self.extra_env)
        return env

    def start(self, party: int) -> None:
        log = (self.root / f"party{party}.log").open("ab")
        self.processes[party] = subprocess.Popen(
            [sys.executable, "-m", "tally.tuples"],
            env=self.env(party),
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def start_all(self) -> Cluster:
        for party in range(3):
            self.start(party)
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 60.0, parties: range = range(3)) -> None:
        deadline = time.monotonic() + timeout
        for party in parties:
            while True:
                try:
                    if httpx.get(self.url(party) + "/readyz", timeout=2.0).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                process = self.processes[party]
                if process is not None and process.poll() is not None:
                    log = (self.root / f"party{party}.log").read_text()
                    raise RuntimeError(f"party {party} exited:\n{log[-3000:]}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"party {party} not ready")
                time.sleep(0.1)

    def kill(self, party: int) -> None:
        process = self.processes[party]
        if process is not None:
            process.send_signal(signal.SIGKILL)
            process.wait(10)
            self.processes[party] = None

    def stop(self) -> None:
        for party, process in enumerate(self.processes):
            if process is not None:
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(10)
                self.processes[party] = None

    def post(
        self, party: int, path: str, body: dict[str, Any], timeout: float = 60.0
    ) -> httpx.Response:
        return httpx.post(self.url(party) + path, json=body, timeout=timeout)

    def get(self, party: int, path: str, timeout: float = 60.0) -> httpx.Response:
        return httpx.get(self.url(party) + path, timeout=timeout)
