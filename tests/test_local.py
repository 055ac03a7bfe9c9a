"""The embedded deployment from the shell: ``tally local up | status | down``, state kept across
restarts, the current deployment found without flags; and the 2-party rules."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import tally
from tally.local_deployment import DeploymentError, LocalDeployment


@pytest.fixture
def home(tmp_path: Path) -> dict[str, str]:
    """An environment whose XDG homes are private to the test."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TALLY_")}
    env.update(XDG_CONFIG_HOME=str(tmp_path / "config"), XDG_DATA_HOME=str(tmp_path / "data"))
    return env


def tally_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tally.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_up_status_down_up_keeps_state(home: dict[str, str], tmp_path: Path) -> None:
    state = tmp_path / "state"
    csv = tmp_path / "views.csv"
    csv.write_text("region,views\nnorth,3\nsouth,4\nnorth,5\n")
    try:
        up = tally_cli(home, "local", "up", "--dir", str(state))
        assert up.returncode == 0, up.stderr
        assert "current deployment" in up.stderr
        secrets = json.loads((state / "secrets.json").read_text())
        tokens = [t for per_party in secrets["tokens"].values() for t in per_party]
        assert not any(token in up.stdout + up.stderr for token in tokens)  # never printed
        assert (state / "parties.yaml").stat().st_mode & 0o077 == 0
        pointer = Path(home["XDG_CONFIG_HOME"]) / "tally" / "current"
        assert pointer.read_text().strip() == str((state / "parties.yaml").resolve())

        status = tally_cli(home, "local", "status")  # the current deployment, no --dir
        assert status.returncode == 0, status.stdout + status.stderr
        assert status.stdout.count(" ready") == 9
        assert tally_cli(home, "upload", str(csv), "--name", "kept").returncode == 0
        config_before = (state / "parties.yaml").read_text()

        down = tally_cli(home, "local", "down")
        assert down.returncode == 0 and "stopped 9 processes" in down.stderr
        stopped = tally_cli(home, "local", "status")
        assert stopped.returncode != 0 and stopped.stdout.count("stopped") == 9
        unreachable = tally_cli(home, "datasets")
        assert unreachable.returncode != 0 and "unreachable" in unreachable.stderr
        assert "Traceback" not in unreachable.stderr

        again = tally_cli(home, "local", "up")  # resumes the current deployment
        assert again.returncode == 0, again.stderr
        assert (state / "parties.yaml").read_text() == config_before  # same ports and tokens
        listed = tally_cli(home, "datasets")
        assert listed.returncode == 0 and "kept" in listed.stdout
        counted = tally_cli(home, "run", "count", "kept")
        assert counted.returncode == 0, counted.stderr
        assert counted.stdout.split() == ["count", "3"]
        assert tally_cli(home, "local", "up").returncode == 0  # already running: no-op
    finally:
        tally_cli(home, "local", "down", "--dir", str(state), "--purge")
    assert not state.exists()


def test_two_parties_default_to_ot_and_group_by_with_nothing_trusted(
    capfd: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 16: two organisations get the dealer-free ot generator by default, and a
    group-by (a sort: shuffle correlations too) runs through the services on it."""
    with pytest.raises(DeploymentError, match="hm3 generator needs exactly 3 parties"):
        LocalDeployment(tmp_path / "two-hm3", parties=2, tuples="hm3")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    rng = np.random.default_rng(4)
    frame = pd.DataFrame(
        {"region": rng.choice(["n", "s", "e"], 300), "views": rng.integers(0, 50, 300)}
    )
    with tally.local(parties=2, show_progress=False) as cluster:
        assert "DEALER" not in capfd.readouterr().err
        assert cluster.deployment.meta["tuples"] == "ot"
        states = cluster.deployment.status()  # 2 x (secret-store, tuples, execution), no dealer
        assert len(states) == 6 and all(s.state == "ready" for s in states)
        cluster.upload(frame, name="views")
        got = cluster.table("views").group_by("region").agg(views=("views", "sum")).to_pandas()
    expected = frame.groupby("region", as_index=False).agg(views=("views", "sum"))
    assert got.to_dict("list") == expected.to_dict("list")


def test_two_party_dealer_deployment_warns_and_computes(
    capfd: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    frame = pd.DataFrame({"region": ["a", "b", "a"], "views": [1, 2, 3]})
    with tally.local(parties=2, tuples="dealer", show_progress=False) as cluster:
        warning = capfd.readouterr().err
        assert "DEALER process" in warning and "never use it for real data" in warning
        assert cluster.parties == 2
        states = cluster.deployment.status()  # 2 x (secret-store, tuples, execution) + dealer
        assert [(s.service, s.party) for s in states][-1] == ("dealer", None)
        assert len(states) == 7 and all(s.state == "ready" for s in states)
        cluster.upload(frame, name="two")
        got = cluster.table("two").group_by("region").agg(views=("views", "sum")).to_pandas()
    assert got.to_dict("list") == {"region": ["a", "b"], "views": [4, 2]}
    assert not (Path(tmp_path) / "config" / "tally" / "current").exists()  # Python API: no pointer


def test_a_service_that_dies_while_starting_is_started_once_more(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    said: list[str] = []
    deployment = LocalDeployment(tmp_path / "state", log=said.append)
    real = deployment._command
    crashes = iter([True])

    def command(service: str, party: int | None) -> list[str]:
        if service == "secret-store" and party == 1 and next(crashes, False):
            return [sys.executable, "-c", "import os, time; time.sleep(0.3); os._exit(3)"]
        return real(service, party)

    monkeypatch.setattr(deployment, "_command", command)
    try:
        deployment.up(make_current=False)
        assert any("secret-store of party 1 ended while starting (exit code 3)" in s for s in said)
        assert all(state.state == "ready" for state in deployment.status())
    finally:
        deployment.purge()


def test_separate_networks_refuse_the_dealer_that_no_namespace_reaches(tmp_path: Path) -> None:
    networks = [("ns-a", "10.231.1.1"), ("ns-b", "10.231.1.2")]
    with pytest.raises(DeploymentError, match="use hm3 or ot tuples with separate networks"):
        LocalDeployment(tmp_path / "state", parties=2, tuples="dealer", networks=networks)
    with pytest.raises(DeploymentError, match="one network per party"):
        LocalDeployment(tmp_path / "other", parties=3, networks=networks)
