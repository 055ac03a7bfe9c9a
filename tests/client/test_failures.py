"""A party down during an upload or a job: a clear failure, and no dataset left behind.

Each test takes a real party process down (SIGTERM or SIGKILL by its recorded pid)
and brings it back afterwards, so the module's deployment serves the next test.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tally.client.cluster import Cluster
from tally.client.errors import (
    JobFailedError,
    PartyRequestError,
    PartyUnreachableError,
    UnknownDatasetError,
)
from tally.client.http import ServiceClient
from tally.local_deployment import LocalDeployment

FRAME = pd.DataFrame({"region": ["a", "b", "a", "c"], "views": [1, 2, 3, 4]})


def stored_states(deployment: LocalDeployment, name: str) -> list[list[str]]:
    """Per party, the states of every dataset row named ``name`` in its metadata database."""
    out = []
    for party in range(deployment.parties):
        path = deployment.dir / f"party-{party}" / "secret-store" / "metadata.db"
        with sqlite3.connect(path) as database:
            rows = database.execute("SELECT state FROM datasets WHERE name = ?", (name,))
            out.append([row[0] for row in rows])
    return out


def visible_anywhere(cluster: Cluster, name: str) -> bool:
    return any(
        store.request("GET", "/v1/datasets", params={"name": name})["items"]
        for store in cluster.stores
    )


@pytest.fixture
def party_2_store_down(deployment: LocalDeployment) -> Iterator[None]:
    deployment.stop_process("secret-store", 2)
    try:
        yield
    finally:
        deployment.start_process("secret-store", 2)


def run_cli(deployment: LocalDeployment, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TALLY_CONFIG": str(deployment.config_path)}
    return subprocess.run(
        [sys.executable, "-m", "tally.cli", *args], capture_output=True, text=True, timeout=90,
        env=env,
    )  # fmt: skip


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("tally: error: ") and result.stderr.count("\n") == 1
    for fragment in fragments:
        assert fragment in result.stderr


@pytest.mark.usefixtures("party_2_store_down")
def test_party_down_before_upload_creates_nothing_anywhere(
    deployment: LocalDeployment, cluster: Cluster, tmp_path: Path
) -> None:
    with pytest.raises(PartyUnreachableError, match=r"party 2 \(secret-store .*nothing was"):
        cluster.upload(FRAME, name="down-sdk")
    csv = tmp_path / "views.csv"
    FRAME.to_csv(csv, index=False)
    assert_one_line_error(
        run_cli(deployment, "upload", str(csv), "--name", "down-cli"),
        "party 2 (secret-store",
        "unreachable",
    )
    assert stored_states(deployment, "down-sdk") == [[], [], []]
    assert stored_states(deployment, "down-cli") == [[], [], []]


def test_party_lost_mid_upload_leaves_nothing_visible(
    deployment: LocalDeployment, cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = ServiceClient.put_octets

    def flaky(self: ServiceClient, path: str, values: Any, params: Any = None) -> Any:
        if self.party.index == 2 and self.service == "secret-store":
            raise PartyUnreachableError("party 2 (secret-store) is unreachable: connection reset")
        return real(self, path, values, params)

    monkeypatch.setattr(ServiceClient, "put_octets", flaky)
    with pytest.raises(PartyUnreachableError, match="nothing was committed at any party"):
        cluster.upload(FRAME, name="mid-upload")
    assert not visible_anywhere(cluster, "mid-upload")
    # pending rows are invisible everywhere and the secret-stores' GC removes them
    assert all(state in ("pending",) for states in stored_states(deployment, "mid-upload")
               for state in states)  # fmt: skip


def test_commit_refused_at_one_party_removes_it_everywhere(
    deployment: LocalDeployment, cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = ServiceClient.request

    def refusing(self: ServiceClient, method: str, path: str, **kwargs: Any) -> Any:
        if self.party.index == 2 and path.endswith("/commit"):
            raise PartyRequestError(2, 503, "unavailable", "disk full")
        return real(self, method, path, **kwargs)

    monkeypatch.setattr(ServiceClient, "request", refusing)
    with pytest.raises(PartyRequestError, match="removed from every party"):
        cluster.upload(FRAME, name="half-committed")
    monkeypatch.undo()
    assert not visible_anywhere(cluster, "half-committed")
    assert all("committed" not in s for s in stored_states(deployment, "half-committed"))


def test_party_down_during_job_fails_clearly_then_recovers(
    deployment: LocalDeployment, cluster: Cluster
) -> None:
    cluster.upload(FRAME, name="job-input")
    job = cluster.table("job-input").group_by("region").agg(n=("views", "count")).run()
    deployment.stop_process("execution", 2, hard=True)
    try:
        started = time.monotonic()
        with pytest.raises((PartyUnreachableError, JobFailedError), match="party 2") as caught:
            job.wait(timeout=60)
        assert time.monotonic() - started < 30
        assert job.id in str(caught.value)
        assert_one_line_error(run_cli(deployment, "result", job.id), job.id, "party 2")
    finally:
        deployment.start_process("execution", 2)
    with pytest.raises(JobFailedError, match=f"job {job.id} failed at party"):
        job.wait(timeout=60)  # the survivors gave up on the lost peer; party 2 lost the job
    fresh = cluster.table("job-input").group_by("region").agg(n=("views", "count")).to_pandas()
    assert fresh["n"].tolist() == [2, 1, 1]


def test_unknown_dataset_everywhere(cluster: Cluster) -> None:
    with pytest.raises(UnknownDatasetError, match="tally datasets"):
        cluster.dataset("00000000-0000-0000-0000-000000000000")
