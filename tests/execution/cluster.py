"""Three parties' execution services as separate processes on loopback, for tests and the bench.

Each party gets its own state directory, PartyLink certificates from one test CA, a
REST port and a PartyControl port.  Inputs and tuples use the local adapters
(datasets in the party's blob store, the seeded development dealer with a ledger).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tally.common.blobstore import LocalBlobStore
from tally.common.job_ids import scoped_job_id
from tally.common.policy import DisclosurePolicy
from tally.execution.local import DealerTuples, put_dataset
from tally.execution.tls import write_test_pki
from tally.mpc.processes import free_ports
from tally.mpc.ring import Shares
from tally.mpc.table import ColumnSpec

FINAL = ("Succeeded", "Failed", "Cancelled")

TOKENS = {
    "alice": "alice-token",
    "bob": "bob-token",
    "mallory": "mallory-token",
    "operator": "operator-token",
}
SERVICE_IDENTITIES = ("operator",)
"""Identities whose token is this party's service credential (as the operator's is)."""

SPECS = {"region": ColumnSpec("key", bits=4), "views": ColumnSpec("int", bits=24)}
"""The schema of the jobs tests' datasets."""
GROUPBY = {
    "keys": ["region"],
    "aggregations": {
        "total": ["views", "sum"],
        "n": ["views", "count"],
        "avg": ["views", "mean"],
        "low": ["views", "min"],
        "high": ["views", "max"],
    },
    "max_groups": 16,
}
"""Group-by params with every aggregation, padded (16 groups: the key has 4 bits)."""


@dataclass
class Cluster:
    root: Path
    parties: int = 3
    tls: bool = True
    peer_timeout: float = 8.0
    accept_timeout: float = 15.0
    extra_env: dict[int, dict[str, str]] = field(default_factory=dict)
    rest_pki: tuple[Path, Path, Path] | None = None
    """(CA, certificate, key) of HTTPS REST listeners; None: plaintext REST."""
    processes: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        ports = free_ports(2 * self.parties)
        self.rest_ports = ports[: self.parties]
        self.control = [f"127.0.0.1:{p}" for p in ports[self.parties :]]
        self.pki = write_test_pki(self.root / "pki", self.parties) if self.tls else []

    def state_dir(self, party: int) -> Path:
        return self.root / f"party{party}"

    def blobs(self, party: int) -> LocalBlobStore:
        return LocalBlobStore(self.state_dir(party) / "blobs")

    def tuples(self, party: int) -> DealerTuples:
        return DealerTuples(self.state_dir(party), party, self.parties, "test-dealer-secret")

    def env(self, party: int) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TALLY_")}
        tokens = [
            {"identity": who, "token": token, "service": who in SERVICE_IDENTITIES}
            for who, token in TOKENS.items()
        ]
        env.update(
            TALLY_EXECUTION_PARTY=str(party),
            TALLY_EXECUTION_PEERS=json.dumps(self.control),
            TALLY_EXECUTION_STATE_DIR=str(self.state_dir(party)),
            TALLY_EXECUTION_TOKENS=json.dumps(tokens),
            TALLY_EXECUTION_DEALER_SECRET="test-dealer-secret",
            TALLY_EXECUTION_PEER_TIMEOUT_S=str(self.peer_timeout),
            TALLY_EXECUTION_ACCEPT_TIMEOUT_S=str(self.accept_timeout),
            TALLY_EXECUTION_IO_TIMEOUT_S="120",
        )
        if self.tls:
            ca, cert, key = self.pki[party]
            env.update(
                TALLY_EXECUTION_TLS_CA=str(ca),
                TALLY_EXECUTION_TLS_CERT=str(cert),
                TALLY_EXECUTION_TLS_KEY=str(key),
            )
        if self.rest_pki is not None:
            ca, cert, key = self.rest_pki
            env.update(
                TALLY_EXECUTION_HTTPS_CERT=str(cert),
                TALLY_EXECUTION_HTTPS_KEY=str(key),
                TALLY_EXECUTION_REST_CA=str(ca),
            )
        env.update(self.extra_env.get(party, {}))
        return env

    def start(self, party: int | None = None) -> None:
        for index in range(self.parties) if party is None else [party]:
            self.state_dir(index).mkdir(parents=True, exist_ok=True)
            log = (self.state_dir(index) / "service.log").open("ab")
            self.processes[index] = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tally.execution",
                    "--port",
                    str(self.rest_ports[index]),
                ],
                env=self.env(index),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            log.close()
        for index in range(self.parties) if party is None else [party]:
            self.wait_ready(index)

    def wait_ready(self, party: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.processes[party].poll() is not None:
                raise RuntimeError(f"party {party} exited: {self.log(party)}")
            try:
                if httpx.get(self.url(party, "/readyz"), timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"party {party} not ready: {self.log(party)}")

    def log(self, party: int) -> str:
        path = self.state_dir(party) / "service.log"
        return path.read_text()[-4000:] if path.exists() else ""

    def url(self, party: int, path: str) -> str:
        scheme = "https" if self.rest_pki else "http"
        return f"{scheme}://127.0.0.1:{self.rest_ports[party]}{path}"

    def request(
        self, party: int, method: str, path: str, who: str = "alice", **kwargs: Any
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {TOKENS[who]}"}
        return httpx.request(method, self.url(party, path), headers=headers, timeout=30.0, **kwargs)

    def submit(self, spec: Mapping[str, Any], who: str = "alice") -> list[httpx.Response]:
        return [self.request(p, "POST", "/v1/jobs", who, json=spec) for p in range(self.parties)]

    def job(self, party: int, job_id: str, who: str = "alice") -> dict[str, Any]:
        response = self.request(party, "GET", f"/v1/jobs/{job_id}", who)
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    def wait(
        self,
        job_id: str,
        parties: list[int] | None = None,
        timeout: float = 90.0,
        phases: tuple[str, ...] = ("Succeeded", "Failed", "Cancelled"),
        who: str = "alice",
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        parties = list(range(self.parties)) if parties is None else parties
        headers = {"Authorization": f"Bearer {TOKENS[who]}"}
        # One client for the whole wait: a new client per poll builds an SSL context each
        # time, which took a quarter of a core away from the job on a 2-core machine.
        # Each request waits at the party until the job changes there (?wait=), so the
        # test does not poll CPU away from the job.  A party already in a wanted phase
        # is asked without waiting.
        states: dict[int, dict[str, Any]] = {}
        with httpx.Client(headers=headers, timeout=30.0) as client:
            while True:
                for party in parties:
                    done = party in states and states[party]["phase"] in phases
                    left = max(0.0, min(1.0, deadline - time.monotonic()))
                    response = client.get(
                        self.url(party, f"/v1/jobs/{job_id}"),
                        params={"wait": 0 if done else round(left, 3)},
                    )
                    response.raise_for_status()
                    states[party] = response.json()
                if all(states[p]["phase"] in phases for p in parties):
                    return [states[p] for p in parties]
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"job {job_id} still {[states[p]['phase'] for p in parties]}"
                    )
                if all(states[p]["phase"] in FINAL for p in parties):
                    time.sleep(0.1)  # nothing will change: do not spin until the deadline

    def put(
        self,
        dataset_id: str,
        share_sets: list[list[Mapping[str, Shares]]],
        specs: Mapping[str, ColumnSpec],
        owner: str = "alice",
        use: Mapping[str, list[str] | None] | None = None,
        policy: DisclosurePolicy | None = None,
    ) -> None:
        """share_sets[party] = one mapping per partition."""
        for party in range(self.parties):
            put_dataset(
                self.blobs(party), dataset_id, share_sets[party], specs, owner, use, policy=policy
            )

    @staticmethod
    def job_id(name: str, who: str = "alice") -> str:
        """The id the services keep job ``name`` of ``who`` under (scoped by submitter)."""
        return scoped_job_id(who, name)

    def worker_status(
        self, party: int, name: str, worker: int = 0, who: str = "alice"
    ) -> dict[str, Any]:
        path = self.state_dir(party) / "jobs" / self.job_id(name, who) / f"w{worker}.json"
        try:
            data: dict[str, Any] = json.loads(path.read_text())
            return data
        except (OSError, ValueError):
            return {}

    def kill(self, party: int) -> None:
        """SIGKILL a party's service and everything it started (it never comes back)."""
        process = self.processes.get(party)
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        for path in (self.state_dir(party) / "jobs").glob("*/w*.json"):
            pid = json.loads(path.read_text()).get("pid", 0)
            if pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for party, process in self.processes.items():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill(party)
