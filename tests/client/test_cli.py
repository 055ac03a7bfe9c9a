"""The ``tally`` CLI end to end on a real deployment: results match pandas, errors are one line."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tally.cli import main
from tally.local_deployment import LocalDeployment

REGIONS = "north,south,east,west"


@pytest.fixture(autouse=True)
def use_deployment(deployment: LocalDeployment, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TALLY_CONFIG", str(deployment.config_path))


@pytest.fixture(scope="module")
def views_csv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    rng = np.random.default_rng(3)
    frame = pd.DataFrame(
        {
            "region": rng.choice(["north", "south", "east"], 80),  # no "west"
            "views": rng.integers(0, 500, 80),
            "share": np.round(rng.uniform(0, 1, 80), 3),
        }
    )
    path = tmp_path_factory.mktemp("csv") / "views.csv"
    frame.to_csv(path, index=False)
    yield path


def tally(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def expected_groups(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path)
    grouped = frame.groupby("region").agg(views=("views", "sum"), n=("views", "count"))
    return grouped.reindex(sorted(REGIONS.split(","))).fillna(0).astype(int).reset_index()


def png_bars(path: Path) -> int:
    """The bar count the chart records in its PNG metadata (and the image is real)."""
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width >= 400 and image.height >= 300
        match = re.search(r"(\d+) bars", image.info["Description"])
    assert match is not None
    return int(match.group(1))


def test_upload_run_wait_output_and_plot(
    capsys: pytest.CaptureFixture[str], views_csv: Path, tmp_path: Path
) -> None:
    code, out, err = tally(
        capsys, "upload", str(views_csv), "--name", "web", "--domain", f"region={REGIONS}",
        "--tag", "source=cli",
    )  # fmt: skip
    assert code == 0, err
    dataset_id = out.strip()
    assert re.fullmatch(r"[0-9a-f-]{36}", dataset_id)
    code, out, err = tally(capsys, "datasets", "--tag", "source=cli")
    assert code == 0 and "web" in out and dataset_id in out and "region:key" in out
    csv, png = tmp_path / "out.csv", tmp_path / "chart.png"
    code, out, err = tally(
        capsys, "run", "groupby", "web", "--by", "region", "--agg", "views=sum:views",
        "--agg", "n=views:count", "--domain", REGIONS, "--output", str(csv), "--plot", str(png),
    )  # fmt: skip
    assert code == 0, err
    assert out.splitlines()[0].split() == ["region", "views", "n"]
    got = pd.read_csv(csv)
    pd.testing.assert_frame_equal(got, expected_groups(views_csv), check_dtype=False)
    assert png_bars(png) == 4  # padded to the whole domain: west has a (zero) bar


def test_dp_clip_and_min_group_size_from_the_command_line(
    capsys: pytest.CaptureFixture[str], views_csv: Path, tmp_path: Path
) -> None:
    code, _, err = tally(
        capsys, "upload", str(views_csv), "--name", "web-dp", "--domain", f"region={REGIONS}"
    )
    assert code == 0, err
    csv = tmp_path / "dp.csv"
    code, out, err = tally(
        capsys, "run", "groupby", "web-dp", "--by", "region", "--agg", "views=sum:views",
        "--agg", "n=count:views", "--domain", REGIONS, "--dp-epsilon", "1",
        "--dp-clip", "views=0:500", "--output", str(csv),
    )  # fmt: skip
    assert code == 0, err
    got, exact = pd.read_csv(csv), expected_groups(views_csv)
    assert got["region"].tolist() == exact["region"].tolist()  # every domain key
    assert (got["views"] % 512 == 0).all()  # released in units of 512 >= 500
    assert ((got["n"] - exact["n"]).abs() <= 40).all()  # 80 coins at epsilon 1
    code, _, err = tally(
        capsys, "run", "groupby", "web-dp", "--by", "region", "--agg", "n=count:views",
        "--domain", REGIONS, "--dp-epsilon", "1", "--dp-clip", "views=5",
    )  # fmt: skip
    assert code != 0 and "COLUMN=LO:HI" in err and "Traceback" not in err
    code, out, err = tally(
        capsys, "run", "groupby", "web-dp", "--by", "region", "--agg", "n=count:views",
        "--min-group-size", "1000",
    )  # fmt: skip
    assert code == 0, err
    assert "north" not in out and "south" not in out  # every group is below 1000 rows


def test_detach_then_status_jobs_and_result(
    capsys: pytest.CaptureFixture[str], views_csv: Path, tmp_path: Path
) -> None:
    code, _, err = tally(capsys, "upload", str(views_csv), "--name", "web2", "--key", "region")
    assert code == 0, err
    code, out, err = tally(
        capsys, "run", "groupby", "--input", "web2", "--by", "region",
        "--agg", "views=sum:views", "--agg", "n=count:views", "--detach",
    )  # fmt: skip
    assert code == 0, err
    job_id = out.strip()
    assert re.fullmatch(r"job-[0-9a-f]{12}", job_id) and out == job_id + "\n"
    code, out, err = tally(capsys, "status", job_id)
    assert code == 0 and out.strip().splitlines()[-1].startswith(f"{job_id}: ")
    csv, png = tmp_path / "r.csv", tmp_path / "r.png"
    code, out, err = tally(capsys, "result", job_id, "--csv", str(csv), "--plot", str(png))
    assert code == 0, err
    expected = expected_groups(views_csv)
    expected = expected[expected["n"] > 0].reset_index(drop=True)  # no domain: only groups seen
    pd.testing.assert_frame_equal(pd.read_csv(csv), expected, check_dtype=False)
    assert png_bars(png) == 3
    code, out, err = tally(capsys, "jobs")
    assert code == 0 and job_id in out and "Succeeded" in out


def run_cli(*args: str, env_config: Path) -> subprocess.CompletedProcess[str]:
    import os

    env = {**os.environ, "TALLY_CONFIG": str(env_config)}
    return subprocess.run(
        [sys.executable, "-m", "tally.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


@pytest.mark.parametrize(
    ("content", "args", "message"),
    [
        ("region,views\nnorth,1\nsouth,lots\n", ["upload"],
         "column 'views' line 3: 'lots' is not a number"),
        ("region,views\nnorth,1\nsouth,1e40\n", ["upload"],
         "column 'views' line 3: 1e+40 is outside"),
        ("", ["run", "groupby", "missing", "--by", "region", "--agg", "n=count:views"],
         "no dataset named 'missing'"),
        ("", ["result", "job-000000000000"], "no job 'job-000000000000'"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_nonzero_no_traceback(
    deployment: LocalDeployment, tmp_path: Path, content: str, args: list[str], message: str
) -> None:
    if args == ["upload"]:
        path = tmp_path / "bad.csv"
        path.write_text(content)
        args = ["upload", str(path), "--name", "bad"]
    result = run_cli(*args, env_config=deployment.config_path)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("tally: error: ")
    assert message in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(
    "command",
    [[], ["local"], ["local", "up"], ["upload"], ["run", "groupby"], ["result"], ["jobs"]],
)
def test_help_everywhere(capsys: pytest.CaptureFixture[str], command: list[str]) -> None:
    code, out, _ = tally(capsys, *command, "--help")
    assert code == 0 and "Usage: tally" in out


def test_policy_show_and_set_from_the_command_line(
    capsys: pytest.CaptureFixture[str], views_csv: Path, tmp_path: Path
) -> None:
    import json

    code, out, err = tally(capsys, "upload", str(views_csv), "--name", "web-policy")
    assert code == 0, err
    code, out, err = tally(capsys, "policy", "show", "web-policy")
    assert code == 0, err
    assert json.loads(out)["programs"] == ["groupby", "sum", "count"]
    code, out, err = tally(
        capsys, "policy", "set", "web-policy", "--min-group-size", "5", "--recipient", "auditor",
        "--readers", "--dp-required", "--epsilon-max", "1", "--budget", "4",
        "--clip", "views=0:500", "--unit", "region", "--max-contributions", "3",
    )  # fmt: skip
    assert code == 0, err
    policy = json.loads(out)
    assert policy["min_group_size"] == 5
    assert policy["recipients"] == {"submitter": True, "readers": True, "identities": ["auditor"]}
    assert policy["dp"]["required"] and policy["dp"]["budget"] == 4
    assert (
        policy["dp"]["clip"] == {"views": [0.0, 500.0]} and policy["dp"]["max_contributions"] == 3
    )
    code, out, _ = tally(capsys, "policy", "show", "web-policy")
    assert json.loads(out) == policy  # the same at every party
    code, out, err = tally(capsys, "datasets")
    assert "web-policy" in out
    # a malformed policy is one line, nothing changed
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"min_group_size": -3}))
    code, out, err = tally(capsys, "policy", "set", "web-policy", "--file", str(bad))
    assert code == 1 and "min_group_size" in err and "Traceback" not in err
    code, out, _ = tally(capsys, "policy", "show", "web-policy")
    assert json.loads(out) == policy
    code, out, err = tally(capsys, "policy", "set", "web-policy", "--clip", "views=9")
    assert code != 0 and "--clip" in err and "Traceback" not in err


def test_sql_query_joins_filters_and_groups_and_unsupported_sql_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Issue 15: ``tally query "SELECT …"`` over two datasets against pandas; SQL the
    front end cannot run is refused by name, with no traceback and nothing submitted."""
    rng = np.random.default_rng(8)
    users = rng.permutation(500)[:90]
    buys = pd.DataFrame({"user_id": users, "amount": rng.integers(1, 300, 90)})
    views = pd.DataFrame(
        {
            "user_id": rng.choice(np.concatenate([users, 900 + np.arange(20)]), 140),
            "campaign": rng.choice(["spring", "summer", "autumn"], 140),
            "age": rng.integers(10, 70, 140),
        }
    )
    paths = {"qviews": tmp_path / "views.csv", "qbuys": tmp_path / "buys.csv"}
    views.to_csv(paths["qviews"], index=False)
    buys.to_csv(paths["qbuys"], index=False)
    for name, path in paths.items():
        extra = ["--domain", "campaign=spring,summer,autumn"] if name == "qviews" else []
        code, _, err = tally(capsys, "upload", str(path), "--name", name, *extra)
        assert code == 0, err
    csv = tmp_path / "answer.csv"
    statement = (
        "SELECT campaign, SUM(amount) AS total, COUNT(*) AS n FROM qviews "
        "JOIN qbuys USING (user_id) WHERE age >= 18 GROUP BY campaign"
    )
    code, out, err = tally(capsys, "query", statement, "--output", str(csv))
    assert code == 0, err
    assert out.splitlines()[0].split() == ["campaign", "total", "n"]
    merged = views.merge(buys, on="user_id")
    expected = (
        merged[merged["age"] >= 18]
        .groupby("campaign", as_index=False)
        .agg(total=("amount", "sum"), n=("amount", "count"))
    )
    got = pd.read_csv(csv).sort_values("campaign").reset_index(drop=True)
    pd.testing.assert_frame_equal(got, expected.sort_values("campaign").reset_index(drop=True))
    for bad, reason in [
        (statement + " ORDER BY campaign", "ORDER BY is not supported"),
        (statement.replace("SUM(amount)", "SUM(amount) OVER ()"), "window functions"),
        (statement.replace("qbuys", "nosuch"), "nosuch"),
    ]:
        code, out, err = tally(capsys, "query", bad)
        assert code != 0 and reason in err, (bad, err)
        assert err.count("\n") == 1 and "Traceback" not in err
