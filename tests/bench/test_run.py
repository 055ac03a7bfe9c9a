"""``bench/run.py``: the hm3 offline phase counted in the run, and shaped networks between parties.

Each test runs the benchmark script as a user would (tiny inputs, seconds) and reads
its JSON line.  ``--tuples hm3`` must generate exactly the tuple plan the dealer path
bills for the same case, by kind, and both must match numpy/pandas (``correct``).
``--net wan`` needs root, ``ip`` and ``tc`` (iproute2) and ``/dev/net/tun``: under
``CI=true`` a machine without them fails those tests instead of skipping them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tally import netns
from tally.mpc.offline.layout import parse_kind

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "bench" / "run.py"
ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join(str(ROOT / p) for p in ("services", "operator", ".")),
}
SHAPING = netns.available(shaping=True)


def _needs_shaping() -> None:
    if SHAPING is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and shaped networks cannot be tested: {SHAPING}")
    pytest.skip(SHAPING)


def _bench(*arguments: str, env: dict[str, str] = ENV) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(RUN), *arguments],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    line: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return line


def _our_namespaces(pid: int) -> list[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return [name for name in listed.stdout.split() if name.startswith(f"tly{pid % 10000:04d}p")]


@pytest.mark.parametrize(
    ("case", "extra"),
    [("ltz", ()), ("groupby", ("--groups", "7"))],
)
def test_hm3_generates_the_plan_in_the_run(case: str, extra: tuple[str, ...]) -> None:
    hm3 = _bench(case, "--rows", "300", *extra, "--tuples", "hm3", "--sharing", "additive")
    dealer = _bench(case, "--rows", "300", *extra)
    assert hm3["correct"] is True and dealer["correct"] is True
    assert hm3["tuples"] == "hm3" and hm3["parties"] == 3
    assert hm3["sharing"] == dealer["sharing"] == "additive"
    assert hm3["offline_seconds"] > 0 and hm3["online_seconds"] > 0
    assert hm3["total_seconds"] == pytest.approx(
        hm3["offline_seconds"] + hm3["online_seconds"], abs=2e-4
    )
    bill = hm3["tuple_bill"]
    keys = bill.pop("keys")
    assert keys.pop("seconds") > 0
    assert keys == {"count": 1, "bytes": 0, "sent": 16, "rounds": 1}
    # The same plan as the dealer's, kind by kind: generated, not estimated.
    assert {k: e["count"] for k, e in bill.items()} == {
        k: e["count"] for k, e in dealer["tuple_bill"].items()
    }
    for kind, entry in bill.items():
        if kind != "shuffle":
            assert entry["bytes"] == entry["count"] * parse_kind(kind).tuple_bytes, kind
        talks = kind.startswith(("dabits", "edabits"))
        assert (entry["sent"] > 0) == talks and (entry["rounds"] > 0) == talks, kind
    assert bill["edabits:64" if case == "ltz" else "shuffle"]["count"] > 0
    assert 0 < hm3["offline_bytes_per_party"] <= 16 + sum(e["sent"] for e in bill.values())
    assert hm3["tuple_bytes_per_party"] >= max(e["bytes"] for e in bill.values())
    assert "net" not in hm3 and "floor_seconds" not in hm3


@pytest.mark.parametrize(("case", "extra"), [("ltz", ()), ("groupby", ("--groups", "7"))])
def test_hm3_takes_the_replicated_path_and_needs_no_triples(
    case: str, extra: tuple[str, ...]
) -> None:
    """Issue 18: three parties with hm3 run the honest-majority path by default; what is
    generated in the run is the shuffles alone (and the keys), and the result is right."""
    line = _bench(case, "--rows", "300", *extra, "--tuples", "hm3")
    assert line["correct"] is True and line["sharing"] == "replicated"
    bill = line["tuple_bill"]
    assert set(bill) == ({"keys", "shuffle"} if case == "groupby" else {"keys"})
    assert line["total_seconds"] == pytest.approx(
        line["offline_seconds"] + line["online_seconds"], abs=2e-4
    )


def test_replicated_sharing_needs_three_parties() -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(RUN),
            "mul",
            "--rows",
            "10",
            "--parties",
            "2",
            "--sharing",
            "replicated",
        ],
        capture_output=True,
        text=True,
        env=ENV,
        check=False,
    )
    assert done.returncode != 0
    assert "three-party" in done.stderr and "Traceback" not in done.stderr


def test_ot_generates_the_plan_with_nothing_trusted_and_filter_is_correct() -> None:
    """Issue 16's bench path (two parties, ot tuples, shuffles included) and issue 15's
    filter case: both correct against their plain baselines."""
    ot = _bench("groupby", "--rows", "300", "--groups", "5", "--parties", "2", "--tuples", "ot")
    assert ot["correct"] is True and ot["tuples"] == "ot" and ot["parties"] == 2
    assert ot["offline_seconds"] > 0 and ot["tuple_bill"]["shuffle"]["sent"] > 0
    assert ot["tuple_bill"]["keys"]["sent"] > 0  # the base OTs
    filtered = _bench("filter", "--rows", "500")
    assert filtered["correct"] is True and filtered["rounds"] > 0


def test_hm3_needs_three_parties() -> None:
    done = subprocess.run(
        [sys.executable, str(RUN), "mul", "--parties", "2", "--tuples", "hm3"],
        capture_output=True,
        text=True,
        env=ENV,
        check=False,
    )
    assert done.returncode == 2 and "--parties 3" in done.stderr
    assert "Traceback" not in done.stderr


def test_wan_runs_every_party_in_a_shaped_namespace() -> None:
    _needs_shaping()
    line = _bench("ltz", "--rows", "300", "--tuples", "hm3", "--net", "wan")
    assert line["correct"] is True
    assert (line["net"], line["rate_mbit"], line["rtt_ms"]) == ("wan", 1000, 20.0)
    floor = line["bytes_per_party"] * 8 / 1e9 + line["rounds"] * 0.010
    assert line["floor_seconds"] == pytest.approx(floor, abs=1e-4)
    assert line["ratio_to_floor"] == pytest.approx(
        line["online_seconds"] / line["floor_seconds"], abs=0.01
    )
    # The links really are 10 ms each way: no round can be faster than that.
    assert line["online_seconds"] >= line["rounds"] * 0.010
    assert line["offline_seconds"] >= line["offline_rounds"] * 0.010
    offline_floor = line["offline_bytes_per_party"] * 8 / 1e9 + line["offline_rounds"] * 0.010
    assert line["offline_floor_seconds"] == pytest.approx(offline_floor, abs=1e-4)


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_run_removes_its_namespaces(stop: signal.Signals) -> None:
    _needs_shaping()
    arguments = ["sort", "--rows", "3000", "--key-bits", "62", "--net", "slow"]
    process = subprocess.Popen(
        [sys.executable, str(RUN), *arguments],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=ENV,
    )
    try:
        deadline = time.monotonic() + 60
        while len(_our_namespaces(process.pid)) < 3:
            assert process.poll() is None, process.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "the bench made no namespaces"
            time.sleep(0.05)
        time.sleep(0.5)  # the parties are running
        process.send_signal(stop)
        process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode != 0
    assert _our_namespaces(process.pid) == []


def test_missing_iproute2_is_a_clear_error() -> None:
    done = subprocess.run(
        [sys.executable, str(RUN), "mul", "--rows", "10", "--net", "wan"],
        capture_output=True,
        text=True,
        env={**ENV, "PATH": "/nonexistent"},
        check=False,
    )
    assert done.returncode == 2
    assert "--net wan" in done.stderr and "iproute2" in done.stderr
    assert "Traceback" not in done.stderr


def test_an_hm3_plan_beyond_memory_is_refused_clearly() -> None:
    script = (
        "import sys; sys.argv = ['run.py']; import run; run.HM3_MEMORY_SHARE = 1e-9; "
        "sys.exit(run.main(['ltz', '--rows', '100', '--tuples', 'hm3', '--sharing', 'additive']))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=RUN.parent,
        check=False,
        timeout=120,
    )
    assert done.returncode == 1 and done.stdout == ""
    assert "keeps each party's whole tuple plan in memory" in done.stderr
    assert "Traceback" not in done.stderr


def test_join_groupby_case_matches_pandas() -> None:
    line = _bench("join-groupby", "--rows", "300", "--groups", "5", "--parties", "2")
    assert line["correct"] is True
    assert line["rounds"] > 0 and line["bytes_per_row_per_party"] > 0
