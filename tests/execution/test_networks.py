"""Parties in separate networks reach each other only through one public endpoint each.

Three parties, each in its own network namespace (:mod:`tests.execution.netns`): the
same private addresses inside each (loopback, and the workers' pod address), only
the public addresses routed between them.  A group-by over 3 partitions per party
runs end to end through the parties' gateways and matches pandas; a worker killed
mid-job resumes through the endpoint.  Under ``CI=true`` a machine that cannot make
namespaces fails this module instead of skipping it.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tally.client.cluster import Cluster
from tally.local_deployment import POD_ADDRESS, LocalDeployment
from tests.execution import netns

REASON = netns.available()
if REASON is not None:
    if os.environ.get("CI") == "true":
        raise RuntimeError(f"CI=true and separate networks cannot be tested: {REASON}")
    pytest.skip(REASON, allow_module_level=True)

ROWS = 6000


@pytest.fixture(scope="module")
def networks() -> Iterator[list[tuple[str, str]]]:
    with netns.party_networks(3) as made:
        yield made


@pytest.fixture(scope="module")
def deployment(
    networks: list[tuple[str, str]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalDeployment]:
    local = LocalDeployment(
        tmp_path_factory.mktemp("netns-state"), networks=networks, log=lambda _text: None
    )
    try:
        local.up(make_current=False)
        yield local
    finally:
        local.purge()


@pytest.fixture(scope="module")
def cluster(deployment: LocalDeployment) -> Iterator[Cluster]:
    with deployment.connect(show_progress=False) as client:
        yield client


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(17)
    return pd.DataFrame(
        {
            "region": rng.choice(["north", "south", "east", "west", "centre"], ROWS),
            "amount": rng.integers(0, 1000, ROWS),
        }
    )


def _expected(frame: pd.DataFrame) -> pd.DataFrame:
    grouped = frame.groupby("region").agg(total=("amount", "sum"), n=("amount", "count"))
    return grouped.reset_index().sort_values("region").reset_index(drop=True)


def _got(result: pd.DataFrame) -> pd.DataFrame:
    frame = result.reset_index() if "region" not in result.columns else result
    columns = frame[["region", "total", "n"]].sort_values("region").reset_index(drop=True)
    return columns.astype({"total": "int64", "n": "int64"})


def test_the_parties_see_each_other_only_at_their_public_addresses(
    deployment: LocalDeployment, networks: list[tuple[str, str]]
) -> None:
    peers = {
        p: json.loads(deployment._execution_env(p, deployment._secrets())["TALLY_EXECUTION_PEERS"])
        for p in range(3)
    }
    for party, (_, public) in enumerate(networks):
        assert peers[party][party].startswith(f"{public}:")
    assert {url.split(":")[0] for url in peers[0]} == {public for _, public in networks}
    assert (
        deployment._execution_env(0, deployment._secrets())["TALLY_EXECUTION_WORKER_HOST"]
        == POD_ADDRESS
    )


def test_a_group_by_over_partitions_runs_through_the_gateways(
    cluster: Cluster, frame: pd.DataFrame
) -> None:
    cluster.upload(frame, name="regional", partitions=3)
    result = (
        cluster.table("regional")
        .group_by("region")
        .agg(total=("amount", "sum"), n=("amount", "count"))
        .to_pandas()
    )
    pd.testing.assert_frame_equal(_got(result), _expected(frame))


def _worker_pids(deployment: LocalDeployment, party: int, job_id: str) -> dict[int, int]:
    jobs = Path(deployment.dir, f"party-{party}", "execution", "jobs", job_id)
    out = {}
    for path in jobs.glob("w*.json"):
        status = json.loads(path.read_text())
        if status.get("phase") == "Running" and status.get("pid"):
            out[int(path.stem[1:])] = int(status["pid"])
    return out


def test_a_worker_killed_mid_job_resumes_through_the_endpoint(
    deployment: LocalDeployment, cluster: Cluster, frame: pd.DataFrame
) -> None:
    if "regional" not in {d.name for d in cluster.datasets()}:
        cluster.upload(frame, name="regional", partitions=3)
    job = (
        cluster.table("regional")
        .group_by("region")
        .agg(total=("amount", "sum"), n=("amount", "count"))
        .run()
    )
    deadline = time.monotonic() + 60
    victims: dict[int, int] = {}
    while time.monotonic() < deadline and not victims:
        victims = _worker_pids(deployment, 1, job.id)
        time.sleep(0.05)
    assert victims, "no worker of party 1 reached Running"
    worker, pid = sorted(victims.items())[0]
    os.kill(pid, signal.SIGKILL)
    status = job.wait(timeout=180)
    assert status.phase == "Succeeded"
    pd.testing.assert_frame_equal(_got(job.result()), _expected(frame))
    record = json.loads(
        Path(deployment.dir, "party-1", "execution", "jobs", job.id, f"w{worker}.json").read_text()
    )
    assert record["generation"] >= 1 and record["pid"] != pid  # a new process resumed
