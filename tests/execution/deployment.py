"""Three parties, each with its secret-store, tuple-service and execution service as processes.

Everything on loopback, SQLite and local directories under one root; PartyLink over
gRPC with mutual TLS.  The execution services run with ``inputs=secret-store`` and
``tuples=service``.  Helpers act as a data provider (create, upload and commit a
dataset at every party's secret-store over REST) and as a result recipient (fetch a
result dataset's shares from every party and open them).  Used by
``tests/execution/test_wired.py`` and ``bench/job_bench.py --tuples hm3``.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from tally.common.job_ids import scoped_job_id
from tally.common.result_layout import VALID_COLUMN, open_result
from tally.common.tls import write_test_pki
from tally.execution.ledger import TupleLedger
from tally.mpc.ring import Shares
from tally.mpc.table import ColumnSpec
from tests.execution.cluster import TOKENS, Cluster, free_ports
from tests.tuples.cluster import Cluster as TupleCluster

STORE_TOKENS = {who: f"{who}-token-at-the-secret-store" for who in [*TOKENS, "carol"]}
"""Tokens at the secret-stores (carol only reads results: she submits no jobs)."""


def service_token(party: int) -> str:
    return f"execution-service-credential-of-party-{party}"


def column_schema(name: str, spec: ColumnSpec) -> dict[str, Any]:
    if spec.kind == "fixed":
        return {"name": name, "kind": "fixed", "frac_bits": spec.frac_bits}
    return {"name": name, "kind": spec.kind, "bits": spec.bits}


@dataclass
class Deployment:
    """Start, use and stop the nine service processes of a three-party deployment."""

    root: Path
    chunk_size: int = 1 << 14
    tls: bool = True
    peer_timeout: float = 8.0
    accept_timeout: float = 30.0
    execution_env: dict[str, str] = field(default_factory=dict)
    rest_tls: bool = False
    """HTTPS on every REST listener (one loopback certificate from a fresh CA); the
    clients trust that CA through ``SSL_CERT_FILE``, which :meth:`start` sets."""
    stores: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.store_ports = free_ports(3)
        self.rest_pki = None
        if self.rest_tls:
            self.rest_pki = write_test_pki(self.root / "rest-pki", [], loopback=["rest"])["rest"]
        self.tuples = TupleCluster(
            self.root / "tuples", chunk_size=self.chunk_size, rest_pki=self.rest_pki
        )
        env = {
            party: {
                "TALLY_EXECUTION_INPUTS": "secret-store",
                "TALLY_EXECUTION_SECRET_STORE_URL": self.store_url(party),
                "TALLY_EXECUTION_SECRET_STORE_TOKEN": service_token(party),
                "TALLY_EXECUTION_TUPLES": "service",
                "TALLY_EXECUTION_TUPLES_URL": self.tuples.url(party),
                "TALLY_EXECUTION_TUPLES_TOKEN": self.tuples.token(party),
                "TALLY_EXECUTION_TUPLE_WAIT_S": "120",
                "TALLY_EXECUTION_TUPLE_GENERATOR": "hm3",  # the replicated path by default
                **self.execution_env,
            }
            for party in range(3)
        }
        self.execution = Cluster(
            self.root / "execution",
            tls=self.tls,
            peer_timeout=self.peer_timeout,
            accept_timeout=self.accept_timeout,
            extra_env=env,
            rest_pki=self.rest_pki,
        )

    # -- processes -------------------------------------------------------------------------

    def store_url(self, party: int) -> str:
        scheme = "https" if self.rest_pki else "http"
        return f"{scheme}://127.0.0.1:{self.store_ports[party]}"

    def _store_env(self, party: int) -> dict[str, str]:
        base = self.root / f"store{party}"
        tokens = [{"identity": who, "token": token} for who, token in STORE_TOKENS.items()]
        tokens.append({"identity": "execution", "token": service_token(party), "service": True})
        env = {k: v for k, v in os.environ.items() if not k.startswith("TALLY_")}
        env.update(
            TALLY_SECRET_STORE_PARTY=str(party),
            TALLY_SECRET_STORE_DATABASE_URL=f"sqlite:///{base / 'metadata.db'}",
            TALLY_SECRET_STORE_BLOB_DIR=str(base / "blobs"),
            TALLY_SECRET_STORE_TOKENS=json.dumps(tokens),
        )
        if self.rest_pki is not None:
            _, cert, key = self.rest_pki
            env.update(
                TALLY_SECRET_STORE_HTTPS_CERT=str(cert), TALLY_SECRET_STORE_HTTPS_KEY=str(key)
            )
        return env

    def start(self) -> Deployment:
        self.root.mkdir(parents=True, exist_ok=True)
        if self.rest_pki is not None:
            os.environ["SSL_CERT_FILE"] = str(self.rest_pki[0])
        (self.root / "tuples").mkdir(exist_ok=True)
        for party in range(3):
            log = (self.root / f"store{party}.log").open("ab")
            self.stores.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "tally.secret_store",
                        "serve",
                        "--port",
                        str(self.store_ports[party]),
                        "--log-level",
                        "warning",
                    ],
                    env=self._store_env(party),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
            log.close()
            self.tuples.start(party)
        self.tuples.wait_ready()
        for party in range(3):
            self._wait_store(party)
        self.execution.start()
        return self

    def _wait_store(self, party: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.stores[party].poll() is not None:
                log = (self.root / f"store{party}.log").read_text()[-3000:]
                raise RuntimeError(f"secret-store {party} exited:\n{log}")
            try:
                if httpx.get(self.store_url(party) + "/readyz", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"secret-store {party} not ready")

    def stop(self) -> None:
        self.execution.stop()
        self.tuples.stop()
        for process in self.stores:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.stores:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        if self.rest_pki is not None and os.environ.get("SSL_CERT_FILE") == str(self.rest_pki[0]):
            del os.environ["SSL_CERT_FILE"]

    # -- a data provider and a recipient, over REST --------------------------------------------

    def store(
        self, party: int, method: str, path: str, who: str = "alice", **kwargs: Any
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {STORE_TOKENS[who]}", **kwargs.pop("headers", {})}
        return httpx.request(
            method, self.store_url(party) + path, headers=headers, timeout=60.0, **kwargs
        )

    def upload(
        self,
        name: str,
        share_sets: list[Mapping[str, Shares]],
        specs: Mapping[str, ColumnSpec],
        owner: str = "alice",
        use: Mapping[str, list[str] | None] | None = None,
        dp_budget: float | None = None,
    ) -> str:
        """Create, upload and commit one dataset at every party; its id (equal everywhere)."""
        dataset_id = str(uuid.uuid4())
        columns = [column_schema(n, s) for n, s in specs.items()]
        if VALID_COLUMN in share_sets[0]:
            columns.append({"name": VALID_COLUMN, "kind": "bool"})
        rows = len(next(iter(share_sets[0].values())))
        body: dict[str, Any] = {"id": dataset_id, "name": name, "columns": columns, "rows": rows}
        if dp_budget is not None:
            body["dp_budget"] = dp_budget
        for party, shares in enumerate(share_sets):
            created = self.store(party, "POST", "/v1/datasets", owner, json=body)
            assert created.status_code == 201, created.text
            for column in [c["name"] for c in columns]:
                data = np.ascontiguousarray(shares[column], dtype="<u8").tobytes()
                headers = {
                    "Content-Type": "application/octet-stream",
                    "Tally-Sha256": hashlib.sha256(data).hexdigest(),
                }
                put = self.store(
                    party,
                    "PUT",
                    f"/v1/datasets/{dataset_id}/columns/{column}",
                    owner,
                    content=data,
                    headers=headers,
                )
                assert put.status_code == 201, put.text
            commit = self.store(party, "POST", f"/v1/datasets/{dataset_id}/commit", owner)
            assert commit.status_code == 200, commit.text
            for grantee, programs in (use or {}).items():
                grant = self.store(
                    party,
                    "PUT",
                    f"/v1/datasets/{dataset_id}/grants/{grantee}/use",
                    owner,
                    json={"programs": programs},
                )
                assert grant.status_code in (200, 201), grant.text
        return dataset_id

    def set_policy(
        self,
        dataset_id: str,
        policy: Mapping[str, Any],
        owner: str = "alice",
        parties: Sequence[int] | None = None,
    ) -> None:
        """The owner replaces the dataset's disclosure policy at the given parties (all)."""
        for party in range(3) if parties is None else parties:
            put = self.store(
                party, "PUT", f"/v1/datasets/{dataset_id}/policy", owner, json=dict(policy)
            )
            assert put.status_code == 200, put.text

    def open_result(self, dataset_id: str, who: str = "alice") -> dict[str, Any]:
        """Fetch a result dataset's shares from every party (as ``who``) and open them."""
        meta = self.store(0, "GET", f"/v1/datasets/{dataset_id}", who)
        assert meta.status_code == 200, meta.text
        body = meta.json()
        shares = []
        for party in range(3):
            columns = {}
            for column in body["columns"]:
                path = f"/v1/datasets/{dataset_id}/columns/{column['name']}"
                response = self.store(party, "GET", path, who)
                assert response.status_code == 200, response.text
                columns[column["name"]] = np.frombuffer(response.content, "<u8").astype(np.uint64)
            shares.append(columns)
        return open_result(body["columns"], shares, body["tags"])

    # -- the tuple-service's records ------------------------------------------------------------

    def tuple_service(
        self, party: int, method: str, path: str, timeout: float = 60.0, **kwargs: Any
    ) -> httpx.Response:
        url = self.tuples.url(party) + path
        return httpx.request(
            method, url, headers=self.tuples.headers(party), timeout=timeout, **kwargs
        )

    def reservation(self, party: int, reservation_id: str) -> dict[str, Any]:
        response = self.tuple_service(party, "GET", f"/v1/reservations/{reservation_id}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def reservations(
        self, party: int, name: str, state: str, who: str = "alice"
    ) -> list[dict[str, Any]]:
        """Reservations of ``who``'s job ``name`` (its id is scoped by submitter)."""
        params = {"state": state, "job_id": scoped_job_id(who, name)}
        ids = self.tuple_service(party, "GET", "/v1/reservations", params=params).json()
        return [self.reservation(party, i) for i in ids]

    def pools(self, party: int) -> list[dict[str, Any]]:
        pools: list[dict[str, Any]] = self.tuple_service(party, "GET", "/v1/pools").json()
        return pools

    def ledger(
        self, party: int, name: str, worker: int = 0, who: str = "alice"
    ) -> list[dict[str, Any]]:
        """The tuple ledger of one worker of ``who``'s job ``name``."""
        job_id = scoped_job_id(who, name)
        return TupleLedger(self.execution.state_dir(party), job_id, worker).entries()
