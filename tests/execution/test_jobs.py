"""Jobs across three parties, each party's execution service (and its workers) as processes.

PartyLink runs over real gRPC with mutual TLS on loopback.  Inputs come from each
party's local dataset store and tuples from the development dealer with a ledger
(the local adapters of ``tally.execution.local``).
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tally.common.policy import DisclosurePolicy, RecipientRule
from tally.execution.local import read_dataset
from tally.execution.results import combine_results
from tally.mpc.partition import split_partitions
from tally.mpc.ring import decode_int, reconstruct
from tally.mpc.table import share_table
from tests.execution.cluster import GROUPBY, SPECS, Cluster
from tests.execution.custom_programs import doubled_total

CUSTOM = {"TALLY_EXECUTION_PROGRAM_MODULES": '["tests.execution.custom_programs"]'}


def _events(rows: int, seed: int) -> tuple[dict[str, Any], np.ndarray]:
    rng = np.random.default_rng(seed)
    data = {"region": rng.integers(0, 12, rows), "views": rng.integers(-1000, 1000, rows)}
    return data, (rng.random(rows) < 0.9).astype(np.int64)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    allowed = {"TALLY_EXECUTION_ALLOWED_PROGRAMS": json.dumps([doubled_total.digest]), **CUSTOM}
    env = {0: allowed, 1: allowed, 2: dict(CUSTOM)}  # party 2 does not allow the custom program
    cluster = Cluster(tmp_path_factory.mktemp("cluster"), accept_timeout=6.0, extra_env=env)
    cluster.start()
    data, valid = _events(3000, seed=1)
    shares = share_table(data, SPECS, 3, valid=valid)
    to_carol = DisclosurePolicy(recipients=RecipientRule(identities=["carol"]))
    cluster.put(
        "events", [[s] for s in shares], SPECS, owner="alice", use={"bob": ["sum"]}, policy=to_carol
    )
    more, more_valid = _events(1000, seed=2)
    more_shares = share_table(more, SPECS, 3, valid=more_valid)
    cluster.put("events-b", [[s] for s in more_shares], SPECS, owner="bob", use={"alice": None})
    cluster.data = {"events": (data, valid), "events-b": (more, more_valid)}  # type: ignore[attr-defined]
    yield cluster
    cluster.stop()


def _frame(cluster: Cluster, *names: str) -> pd.DataFrame:
    frames = []
    for name in names:
        data, valid = cluster.data[name]  # type: ignore[attr-defined]
        frames.append(pd.DataFrame(data)[valid == 1])
    return pd.concat(frames)


def _job(job_id: str, **changes: Any) -> dict[str, Any]:
    spec = {
        "id": job_id,
        "program": "groupby",
        "inputs": {"events": ["events", "events-b"]},
        "params": GROUPBY,
        "outputs": {"result": {"kind": "open", "recipients": ["alice"]}},
    }
    spec.update(changes)
    return spec


def _opened(cluster: Cluster, job_id: str) -> dict[str, Any]:
    responses = [cluster.request(p, "GET", f"/v1/jobs/{job_id}/result") for p in range(3)]
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    return combine_results([r.json() for r in responses])


def _check_groupby(got: dict[str, Any], frame: pd.DataFrame) -> None:
    expected = frame.groupby("region").agg(
        total=("views", "sum"),
        n=("views", "count"),
        avg=("views", "mean"),
        low=("views", "min"),
        high=("views", "max"),
    )
    result = pd.DataFrame(got).set_index("region").sort_index()
    assert list(result.index) == list(expected.index)
    for column in ("total", "n", "low", "high"):
        assert np.array_equal(result[column].to_numpy(), expected[column].to_numpy()), column
    assert np.allclose(result["avg"].to_numpy(), expected["avg"].to_numpy())


def test_groupby_job_opened_to_recipient_matches_pandas(cluster: Cluster) -> None:
    responses = cluster.submit(_job("groupby-open"))
    assert [r.status_code for r in responses] == [201, 201, 201]
    states = cluster.wait("groupby-open")
    assert {s["phase"] for s in states} == {"Succeeded"}, states
    for state in states:
        assert state["stage"] == state["stages_total"] > 10
        assert state["restarts"] == 0 and state["bytes_sent"] > 0 and state["rounds"] > 0
    _check_groupby(
        _opened(cluster, "groupby-open")["result"], _frame(cluster, "events", "events-b")
    )
    # only recipients see the opened output
    denied = cluster.request(0, "GET", "/v1/jobs/groupby-open/result", who="bob")
    assert denied.status_code == 404 and denied.json()["error"] == "not_found"
    # submitting the same job again is idempotent
    assert cluster.submit(_job("groupby-open"))[0].status_code == 200
    # the party's service credential (its operator) follows the job, but reads no result
    # and submits nothing: a job is always submitted with its analyst's own token
    followed = cluster.request(0, "GET", "/v1/jobs/groupby-open", who="operator")
    assert followed.status_code == 200 and followed.json()["phase"] == "Succeeded"
    result = cluster.request(0, "GET", "/v1/jobs/groupby-open/result", who="operator")
    assert result.status_code == 403
    spec = _job("by-operator")
    refused = cluster.request(0, "POST", "/v1/jobs", who="operator", json=spec)
    assert refused.status_code == 403 and "analyst's own token" in refused.json()["detail"]


def test_sum_job_with_shares_output_as_result_dataset(cluster: Cluster) -> None:
    spec = {
        "id": "sum-shares",
        "program": "sum",
        "inputs": {"events": "events"},
        "params": {"column": "views"},
        "outputs": {"result": {"kind": "shares", "recipients": ["carol"]}},
    }
    assert [r.status_code for r in cluster.submit(spec, who="bob")] == [201, 201, 201]
    states = cluster.wait("sum-shares", who="bob")
    assert {s["phase"] for s in states} == {"Succeeded"}, states
    dataset = states[0]["results"]["result"][0]
    parts = [read_dataset(cluster.blobs(p), dataset, 0) for p in range(3)]
    total = decode_int(reconstruct([part["views"] for part in parts]))
    assert int(total[0]) == int(_frame(cluster, "events")["views"].sum())
    # the opened-result API is for "open" outputs only
    assert cluster.request(0, "GET", "/v1/jobs/sum-shares/result", who="bob").status_code == 403
    # the same spec again is idempotent for its submitter: the same job
    bobs = cluster.request(0, "POST", "/v1/jobs", who="bob", json=spec)
    assert bobs.status_code == 200 and bobs.json()["id"] == cluster.job_id("sum-shares", "bob")
    # job ids are scoped by submitter (issue 14 item 6): before, a job id taken by one
    # identity was a 409 for every other, so anyone who knew or guessed a name (an
    # AnalyticsJob's, say) could take it first.  Alice's job of the same name is her own
    # job, with its own id and its own result dataset, and bob's stays bob's.
    alices = cluster.submit(spec, who="alice")
    assert [r.status_code for r in alices] == [201, 201, 201], [r.text for r in alices]
    alice_id = alices[0].json()["id"]
    assert alice_id == cluster.job_id("sum-shares", "alice") != bobs.json()["id"]
    mine = cluster.wait("sum-shares", who="alice")
    assert {s["phase"] for s in mine} == {"Succeeded"}, mine
    assert mine[0]["results"]["result"][0] != dataset
    assert cluster.job(0, "sum-shares", who="bob")["id"] == bobs.json()["id"]
    # a full id names the job too, for whoever may see it
    assert cluster.job(0, alice_id, who="operator")["id"] == alice_id
    assert cluster.job(0, alice_id, who="alice")["id"] == alice_id
    # the operator's credential may name a job by its name only when one submitter has it
    ambiguous = cluster.request(0, "GET", "/v1/jobs/sum-shares", who="operator")
    assert ambiguous.status_code == 409 and "give its full id" in ambiguous.json()["detail"]
    # a name too long to scope is refused before anything is stored
    long_name = {**spec, "id": "x" * 51}
    refused = cluster.request(0, "POST", "/v1/jobs", who="alice", json=long_name)
    assert refused.status_code == 422 and "at most 50 characters" in refused.json()["detail"]


def test_partitioned_groupby_runs_three_workers(cluster: Cluster, tmp_path: Path) -> None:
    data, valid = _events(1500, seed=5)
    parts = split_partitions({**data, "valid": valid}, ["region"], 3, b"consortium-test-key-0123")
    share_sets: list[list[dict[str, np.ndarray]]] = [[], [], []]
    for columns, padding in parts:
        plain = {k: v for k, v in columns.items() if k != "valid"}
        weights = columns["valid"] * padding
        for party, share in enumerate(share_table(plain, SPECS, 3, valid=weights)):
            share_sets[party].append(share)
    cluster.put("events-p3", share_sets, SPECS)
    spec = _job("groupby-p3", inputs={"events": "events-p3"}, partitions=3)
    assert [r.status_code for r in cluster.submit(spec)] == [201, 201, 201]
    states = cluster.wait("groupby-p3")
    assert {s["phase"] for s in states} == {"Succeeded"}, states
    workers = [cluster.worker_status(0, "groupby-p3", w) for w in range(3)]
    assert all(w["phase"] == "Succeeded" for w in workers)
    _check_groupby(_opened(cluster, "groupby-p3")["result"], pd.DataFrame(data)[valid == 1])


def test_sigkilled_worker_restarts_and_resumes_without_reusing_tuples(cluster: Cluster) -> None:
    assert all(r.status_code == 201 for r in cluster.submit(_job("groupby-crash")))
    total = cluster.job(0, "groupby-crash")["stages_total"]
    target = random.Random().randint(2, total - 3)
    deadline = time.monotonic() + 60
    while True:
        status = cluster.worker_status(1, "groupby-crash")
        if status.get("stage", 0) >= target and status.get("phase") == "Running":
            os.kill(status["pid"], signal.SIGKILL)
            break
        assert time.monotonic() < deadline, status
        time.sleep(0.01)
    states = cluster.wait("groupby-crash")
    assert [s["phase"] for s in states] == ["Succeeded"] * 3, (target, states)
    assert [s["restarts"] for s in states] == [0, 1, 0]
    _check_groupby(
        _opened(cluster, "groupby-crash")["result"], _frame(cluster, "events", "events-b")
    )
    for party in range(3):
        ledger = cluster.tuples(party).ledger(cluster.job_id("groupby-crash"), 0)
        used = [(entry["epoch"], entry["batch"]) for entry in ledger]
        assert len(used) == len(set(used)), f"party {party} consumed a tuple twice"
        assert len({entry["epoch"] for entry in ledger}) == 2, f"party {party}: one resume"
        assert (
            cluster.tuples(party).reservation(cluster.job_id("groupby-crash"))["state"]
            == "released"
        )
    resumed = cluster.worker_status(1, "groupby-crash")["resumed_from"]
    assert resumed and resumed[-1] >= target - 1, (target, resumed)


def test_cancel_stops_the_job_everywhere(cluster: Cluster) -> None:
    assert all(r.status_code == 201 for r in cluster.submit(_job("groupby-cancel")))
    cluster.wait("groupby-cancel", phases=("Running",), timeout=30)
    response = cluster.request(1, "DELETE", "/v1/jobs/groupby-cancel")
    assert response.status_code == 200
    states = cluster.wait("groupby-cancel", timeout=30)
    assert [s["phase"] for s in states] == ["Cancelled"] * 3, states
    assert "cancelled" in states[0]["reason"]


def test_status_with_wait_answers_at_the_next_change(cluster: Cluster) -> None:
    from concurrent.futures import ThreadPoolExecutor

    spec = _job("groupby-follow")
    assert cluster.request(0, "POST", "/v1/jobs", json=spec).status_code == 201
    with ThreadPoolExecutor(1) as pool:
        started = time.monotonic()
        follow = pool.submit(
            cluster.request, 0, "GET", "/v1/jobs/groupby-follow", params={"wait": 25}
        )
        time.sleep(1.0)
        assert not follow.done()  # nothing changed yet: the request is held
        for party in (1, 2):
            assert cluster.request(party, "POST", "/v1/jobs", json=spec).status_code == 201
        answer = follow.result(timeout=25)
        assert time.monotonic() - started < 20
    assert answer.status_code == 200 and answer.json()["phase"] != "Pending"
    states = cluster.wait("groupby-follow", timeout=60)
    assert [s["phase"] for s in states] == ["Succeeded"] * 3, states
    started = time.monotonic()
    final = cluster.request(0, "GET", "/v1/jobs/groupby-follow", params={"wait": 25})
    assert final.json()["phase"] == "Succeeded" and time.monotonic() - started < 5
    for bad in (-1, 61, "soon"):
        response = cluster.request(0, "GET", "/v1/jobs/groupby-follow", params={"wait": bad})
        assert response.status_code == 422, response.text


def test_custom_program_pinned_by_hash_runs_where_allowed(cluster: Cluster) -> None:
    spec = {
        "id": "custom-denied",
        "program": doubled_total.digest,
        "inputs": {"events": "events"},
        "params": {"column": "views"},
        "outputs": {"result": {"kind": "open", "recipients": ["alice"]}},
    }
    responses = cluster.submit(spec)
    assert [r.status_code for r in responses[:2]] == [201, 201]
    assert responses[2].status_code == 403
    assert responses[2].json()["error"] == "program_not_allowed"
    states = cluster.wait("custom-denied", parties=[0, 1], timeout=40)
    assert all(s["phase"] == "Failed" for s in states)
    assert "party 2 has not accepted" in states[0]["reason"]


@pytest.mark.parametrize(
    ("changes", "who", "status", "code"),
    [
        ({"inputs": {"events": "no-such-dataset"}}, "alice", 404, "unknown_dataset"),
        ({"inputs": {"events": "events"}}, "mallory", 403, "dataset_forbidden"),
        ({"inputs": {"events": "events"}}, "bob", 403, "dataset_forbidden"),
        ({"program": "no-such-program"}, "alice", 404, "unknown_program"),
        (
            {"params": {"keys": ["nope"], "aggregations": {"n": ["views", "count"]}}},
            "alice",
            422,
            "bad_params",
        ),
        ({"id": "Bad/Id"}, "alice", 422, "validation_error"),
    ],
)
def test_bad_input_is_refused_before_anything_runs(
    cluster: Cluster, changes: dict[str, Any], who: str, status: int, code: str
) -> None:
    spec = _job("bad-input", **changes)
    response = cluster.request(0, "POST", "/v1/jobs", who, json=spec)
    assert response.status_code == status, response.text
    assert response.json()["error"] == code
    assert cluster.request(0, "GET", "/v1/jobs/bad-input", who).status_code == 404


def test_missing_token_is_401(cluster: Cluster) -> None:
    import httpx

    response = httpx.post(cluster.url(0, "/v1/jobs"), json=_job("no-token"))
    assert response.status_code == 401 and response.json()["error"] == "unauthorized"


def test_spec_mismatch_fails_with_a_clear_reason(cluster: Cluster) -> None:
    other = dict(GROUPBY, max_groups=20)
    responses = [
        cluster.request(
            p, "POST", "/v1/jobs", json=_job("mismatch", params=GROUPBY if p else other)
        )
        for p in range(3)
    ]
    assert [r.status_code for r in responses] == [201, 201, 201]
    states = cluster.wait("mismatch", timeout=30)
    assert all(s["phase"] == "Failed" for s in states), states
    assert any("spec mismatch" in s["reason"] for s in states)
    assert all(cluster.worker_status(p, "mismatch") == {} for p in range(3))


def test_a_party_on_another_online_path_fails_the_job_clearly(tmp_path: Path) -> None:
    """Issue 18: parties 0 and 1 take the replicated path, party 2 the additive one: the
    job fails at every party before any stage runs, with a reason naming the setting.
    (The replicated path itself runs through the services in test_wired.py.)"""
    replicated = {"TALLY_EXECUTION_SHARING": "replicated"}
    env = {0: replicated, 1: replicated, 2: {"TALLY_EXECUTION_SHARING": "additive"}}
    cluster = Cluster(tmp_path, accept_timeout=6.0, extra_env=env)
    cluster.start()
    try:
        data, valid = _events(500, seed=17)
        cluster.put("events", [[s] for s in share_table(data, SPECS, 3, valid=valid)], SPECS)
        spec = _job("mixed", inputs={"events": "events"})
        assert all(r.status_code == 201 for r in cluster.submit(spec))
        states = cluster.wait("mixed", timeout=30)
        assert {s["phase"] for s in states} == {"Failed"}, states
        for state in states:
            assert "TALLY_EXECUTION_SHARING" in state["reason"], state["reason"]
            assert state["stage"] == 0
    finally:
        cluster.stop()


def test_party_that_never_comes_back_fails_the_job_everywhere(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, peer_timeout=4.0)
    cluster.start()
    try:
        data, valid = _events(3000, seed=7)
        shares = share_table(data, SPECS, 3, valid=valid)
        cluster.put("events", [[s] for s in shares], SPECS)
        spec = _job("lost-party", inputs={"events": "events"})
        assert all(r.status_code == 201 for r in cluster.submit(spec))
        cluster.wait("lost-party", phases=("Running",), timeout=30)
        deadline = time.monotonic() + 30
        while cluster.worker_status(2, "lost-party").get("stage", 0) < 3:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        killed = time.monotonic()
        cluster.kill(2)
        states = cluster.wait("lost-party", parties=[0, 1], timeout=30)
        elapsed = time.monotonic() - killed
        assert [s["phase"] for s in states] == ["Failed", "Failed"], states
        assert elapsed < 4.0 + 10.0, elapsed
        for state in states:
            assert "stayed away longer than 4 s" in state["reason"], state["reason"]
        for party in (0, 1):
            assert (
                cluster.tuples(party).reservation(cluster.job_id("lost-party"))["state"]
                == "released"
            )
    finally:
        cluster.stop()


def test_peer_without_a_valid_certificate_is_refused(tmp_path: Path) -> None:
    from tally.execution.tls import write_test_pki

    rogue = write_test_pki(tmp_path / "rogue-pki", 3)[2]  # another CA's party-2 certificate
    env = {
        2: {
            "TALLY_EXECUTION_TLS_CA": str(rogue[0]),
            "TALLY_EXECUTION_TLS_CERT": str(rogue[1]),
            "TALLY_EXECUTION_TLS_KEY": str(rogue[2]),
        }
    }
    cluster = Cluster(tmp_path / "cluster", accept_timeout=4.0, extra_env=env)
    cluster.start()
    try:
        data, valid = _events(100, seed=8)
        shares = share_table(data, SPECS, 3, valid=valid)
        cluster.put("events", [[s] for s in shares], SPECS)
        spec = _job("rogue", inputs={"events": "events"})
        assert all(r.status_code == 201 for r in cluster.submit(spec))
        states = cluster.wait("rogue", timeout=30)
        assert all(s["phase"] == "Failed" for s in states), states
        assert "party 2 unreachable" in states[0]["reason"], states[0]["reason"]
        assert all(cluster.worker_status(p, "rogue") == {} for p in range(3))
    finally:
        cluster.stop()


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"inputs": {"events": ["events"] * 65}}, "at most 64 (max_input_datasets)"),
        (
            {
                "params": {
                    "keys": ["region"],
                    "aggregations": {"n": ["views", "count"]},
                    "max_groups": 2_000_000,
                }
            },  # fmt: skip
            "at most 1048576 (max_output_groups)",
        ),
        (
            {
                "dp": {"epsilon": 0.01, "delta": 1e-6, "clip": {"views": [0, 10]}},
                "params": {
                    "keys": ["region"],
                    "aggregations": {"n": ["views", "count"]},
                    "domain": [0, 1],
                },
            },  # fmt: skip
            "(max_dp_trials): raise epsilon or delta",
        ),
    ],
)
def test_a_job_beyond_this_partys_caps_is_refused_before_anything_runs(
    cluster: Cluster, changes: dict[str, Any], words: str
) -> None:
    # before, job parameters were unbounded: one request could ask for any work (regression)
    response = cluster.request(0, "POST", "/v1/jobs", json={**_job("too-large"), **changes})
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "too_large" and words in response.json()["detail"]
    assert cluster.request(0, "GET", "/v1/jobs/too-large").status_code == 404
