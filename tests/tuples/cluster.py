"""Three tuple-services as separate OS processes on loopback, for the tuple-service tests.

Secure as in production: TupleLink runs over mutual TLS with throwaway party
certificates (``pki/`` under the root), and the REST API needs a bearer token
(``token(party)``; ``get``/``post`` send it).  ``generator="dealer"`` also starts
a dealer process (``python -m tally.tuples.dealer``) with its own certificate.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tally.common.tls import party_name, write_test_pki
from tally.mpc.processes import free_ports

DEALER_SECRET = "dealer-shuffle-key-for-the-tuple-service-tests"


@dataclass
class Cluster:
    """Start, stop, kill and restart three tuple-service processes."""

    root: Path
    database_urls: list[str] | None = None
    chunk_size: int = 4096
    pools: list[dict[str, Any]] = field(default_factory=list)
    replenish: bool = False
    extra_env: dict[str, str] = field(default_factory=dict)
    generator: str = "hm3"
    tls: bool = True
    rest_pki: tuple[Path, Path, Path] | None = None
    """(CA, certificate, key) of an HTTPS REST listener; None: plaintext REST."""
    processes: list[subprocess.Popen[bytes] | None] = field(default_factory=list)
    dealer_process: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        ports = free_ports(7)
        self.grpc_ports, self.http_ports, self.dealer_port = ports[:3], ports[3:6], ports[6]
        self.processes = [None, None, None]
        self.root.mkdir(parents=True, exist_ok=True)
        names = [party_name(p) for p in range(3)] + ["dealer"]
        self.pki = write_test_pki(self.root / "pki", names) if self.tls else {}

    def url(self, party: int) -> str:
        scheme = "https" if self.rest_pki else "http"
        return f"{scheme}://127.0.0.1:{self.http_ports[party]}"

    def token(self, party: int) -> str:
        """The bearer token of party ``party``'s tuple-service (its execution service's)."""
        return f"tuple-service-credential-of-party-{party}"

    def headers(self, party: int) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(party)}"}

    def tls_env(self, prefix: str, name: str) -> dict[str, str]:
        if not self.tls:
            return {}
        ca, cert, key = self.pki[name]
        return {
            f"{prefix}TLS_CA": str(ca),
            f"{prefix}TLS_CERT": str(cert),
            f"{prefix}TLS_KEY": str(key),
        }

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
                "TALLY_TUPLES_TOKENS": json.dumps(
                    [
                        {"identity": "execution", "token": self.token(party)},
                        {"identity": "monitor", "token": MONITOR_TOKEN, "scopes": ["monitoring"]},
                    ]
                ),
                "TALLY_TUPLES_GENERATOR": self.generator,
                "TALLY_TUPLES_DEALER": f"127.0.0.1:{self.dealer_port}",
                **self.tls_env("TALLY_TUPLES_", party_name(party)),
            }
        )
        if self.rest_pki is not None:
            _, cert, key = self.rest_pki
            env.update(TALLY_TUPLES_HTTPS_CERT=str(cert), TALLY_TUPLES_HTTPS_KEY=str(key))
        env.update(self.extra_env)
        return env

    def dealer_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TALLY_")}
        env.update(
            {
                "TALLY_DEALER_LISTEN": f"127.0.0.1:{self.dealer_port}",
                "TALLY_DEALER_PEERS": json.dumps([f"127.0.0.1:{port}" for port in self.grpc_ports]),
                "TALLY_DEALER_SECRET": DEALER_SECRET,
                "TALLY_DEALER_RPC_TIMEOUT_S": "30",
                **self.tls_env("TALLY_DEALER_", "dealer"),
            }
        )
        return env

    def start_dealer(self) -> None:
        log = (self.root / "dealer.log").open("ab")
        self.dealer_process = subprocess.Popen(
            [sys.executable, "-m", "tally.tuples.dealer"],
            env=self.dealer_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def start(self, party: int) -> None:
        log = (self.root / f"party{party}.log").open("ab")
        self.processes[party] = subprocess.Popen(
            [sys.executable, "-m", "tally.tuples"],
            env=self.env(party),
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def start_all(self) -> Cluster:
        if self.generator == "dealer":
            self.start_dealer()
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
                if self.dealer_process is not None and self.dealer_process.poll() is not None:
                    log = (self.root / "dealer.log").read_text()
                    raise RuntimeError(f"the dealer exited:\n{log[-3000:]}")
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
                terminate(process)
                self.processes[party] = None
        if self.dealer_process is not None:
            terminate(self.dealer_process)
            self.dealer_process = None

    def post(
        self, party: int, path: str, body: dict[str, Any], timeout: float = 60.0
    ) -> httpx.Response:
        return httpx.post(
            self.url(party) + path, json=body, headers=self.headers(party), timeout=timeout
        )

    def get(self, party: int, path: str, timeout: float = 60.0) -> httpx.Response:
        return httpx.get(self.url(party) + path, headers=self.headers(party), timeout=timeout)


MONITOR_TOKEN = "monitoring-only-token-0123456789"
"""A token scoped to monitoring: it may read the pools, never a tuple share."""


def terminate(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


def databases_for(request: Any) -> list[str] | None:
    """Three fresh databases on the real PostgreSQL for a ``postgresql`` fixture param,
    else None (each party's SQLite file)."""
    if request.param != "postgresql":
        return None
    server = request.getfixturevalue("postgres_server")
    return [server.create_database() for _ in range(3)]
