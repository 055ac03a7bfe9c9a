"""Jobs on the real services: inputs from the secret-stores, hm3 tuples from the tuple-services.

Three parties, each with a secret-store, a tuple-service and an execution service as
separate processes on loopback (``tests/execution/deployment.py``).  A data provider
uploads shares over the secret-store's REST API; results come back as result datasets
that the recipient fetches from every party and opens.  The tuple-services' records
(reservations over REST, chunk states in their SQL index) show what was consumed.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from tally.common.job_ids import scoped_job_id
from tally.mpc.table import ColumnSpec, share_table
from tests.execution.cluster import GROUPBY, SPECS
from tests.execution.deployment import Deployment

CHUNK = 1 << 14


def _events(rows: int, seed: int) -> tuple[dict[str, Any], np.ndarray]:
    rng = np.random.default_rng(seed)
    data = {"region": rng.integers(0, 12, rows), "views": rng.integers(-1000, 1000, rows)}
    return data, (rng.random(rows) < 0.9).astype(np.int64)


@dataclass
class Wired:
    """The deployment, the uploaded datasets' ids and the plain rows they hold."""

    deployment: Deployment
    ids: dict[str, str]
    frame: pd.DataFrame

    def job(self, job_id: str, recipients: list[str], **changes: Any) -> dict[str, Any]:
        spec = {
            "id": job_id,
            "program": "groupby",
            "inputs": {"events": [self.ids["events"], self.ids["events-b"]]},
            "params": GROUPBY,
            "outputs": {"result": {"kind": "shares", "recipients": recipients}},
        }
        return {**spec, **changes}


@pytest.fixture(scope="module")
def wired(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Wired]:
    deployment = Deployment(
        tmp_path_factory.mktemp("wired"), chunk_size=CHUNK, peer_timeout=5.0, rest_tls=True
    )
    try:
        deployment.start()
        ids, frames = {}, []
        for name, owner, rows, seed, use in (
            ("events", "alice", 3000, 1, {"bob": ["sum"]}),
            ("events-b", "bob", 1000, 2, {"alice": ["groupby"]}),
        ):
            data, valid = _events(rows, seed)
            shares = share_table(data, SPECS, 3, valid=valid)
            ids[name] = deployment.upload(name, shares, SPECS, owner=owner, use=use)
            frames.append(pd.DataFrame(data)[valid == 1])
        yield Wired(deployment, ids, pd.concat(frames))
    finally:
        deployment.stop()


def _check(wired: Wired, states: list[dict[str, Any]], who: str) -> None:
    datasets = {s["results"]["result"][0] for s in states}
    assert len(datasets) == 1, "the result dataset has the same id at every party"
    got = pd.DataFrame(wired.deployment.open_result(datasets.pop(), who))
    got = got.set_index("region").sort_index()
    expected = wired.frame.groupby("region").agg(
        total=("views", "sum"),
        n=("views", "count"),
        avg=("views", "mean"),
        low=("views", "min"),
        high=("views", "max"),
    )
    assert list(got.index) == list(expected.index)
    for column in ("total", "n", "low", "high"):
        assert np.array_equal(got[column].to_numpy(), expected[column].to_numpy()), column
    assert np.allclose(got["avg"].to_numpy(), expected["avg"].to_numpy())


def _chunks(view: dict[str, Any], kind: str) -> list[int]:
    return [i for first, last in view["kinds"][kind]["ranges"] for i in range(first, last + 1)]


def _consumed_tuples(deployment: Deployment, party: int, job_id: str) -> dict[str, list[Any]]:
    """Every tuple the party's ledger says it drew, as global (kind, chunk, index) identities."""
    views: dict[str, dict[str, Any]] = {}
    drawn: dict[str, list[Any]] = {}
    for entry in deployment.ledger(party, job_id):
        lease, kind = entry["lease"], entry["kind"]
        if lease not in views:
            views[lease] = deployment.reservation(party, lease)
        if kind == "shuffle":  # derived per reservation and index: no chunks
            drawn.setdefault(kind, []).append((lease, entry["offset"]))
            continue
        chunks = _chunks(views[lease], kind)
        for offset in range(entry["offset"], entry["offset"] + entry["count"]):
            drawn.setdefault(kind, []).append((chunks[offset // CHUNK], offset % CHUNK, lease))
    return drawn


def _chunk_states(deployment: Deployment, party: int) -> dict[int, tuple[str, str | None]]:
    database = deployment.root / "tuples" / f"party{party}" / "index.db"
    with sqlite3.connect(database) as connection:
        rows = connection.execute("SELECT id, state, reservation_id FROM tuple_chunks").fetchall()
    return {int(i): (state, reservation) for i, state, reservation in rows}


def _assert_released(deployment: Deployment, job_id: str) -> None:
    for party in range(3):
        assert deployment.reservations(party, job_id, "active") == []
        assert deployment.reservations(party, job_id, "released"), party
        pools = deployment.pools(party)
        assert all(pool["reserved"] == 0 for pool in pools), pools


def test_every_rest_listener_of_the_deployment_is_https(wired: Wired) -> None:
    """The wired tests run the TLS path: each service answers HTTPS only."""
    deployment = wired.deployment
    urls = [deployment.store_url(p) for p in range(3)]
    urls += [deployment.tuples.url(p) for p in range(3)]
    urls += [deployment.execution.url(p, "") for p in range(3)]
    for url in urls:
        assert url.startswith("https://"), url
        assert httpx.get(url + "/readyz", timeout=5.0).status_code == 200, url
        with pytest.raises(httpx.HTTPError):
            httpx.get("http://" + url.removeprefix("https://") + "/readyz", timeout=5.0)


def test_groupby_from_secret_stores_with_hm3_tuples_matches_pandas(wired: Wired) -> None:
    deployment = wired.deployment
    # bob's dataset sends outputs to the submitter only, until bob names carol
    refused = deployment.execution.submit(wired.job("wired", ["carol"]))
    assert [r.status_code for r in refused] == [403, 403, 403], [r.text for r in refused]
    for response in refused:
        assert response.json()["error"] == "policy_violation"
        assert wired.ids["events-b"] in response.json()["detail"]
        assert "rule recipients: 'carol' may not receive" in response.json()["detail"]
    deployment.set_policy(wired.ids["events-b"], {"recipients": {"identities": ["carol"]}}, "bob")
    assert [r.status_code for r in deployment.execution.submit(wired.job("wired", ["carol"]))] == [
        201,
        201,
        201,
    ]
    states = deployment.execution.wait("wired", timeout=120)
    assert {s["phase"] for s in states} == {"Succeeded"}, states
    _check(wired, states, "carol")
    # the dry plan covered the whole run: one reservation (the same at every party), released
    views = [deployment.reservations(p, "wired", "released") for p in range(3)]
    assert [len(v) for v in views] == [1, 1, 1], views
    assert views[0][0]["kinds"] == views[1][0]["kinds"] == views[2][0]["kinds"]
    # three parties on hm3 take the replicated path: only shuffles are reserved (issue 18)
    assert set(views[0][0]["kinds"]) == {"shuffle"}, views[0][0]["kinds"]
    for party in range(3):
        leases = {entry["lease"] for entry in deployment.ledger(party, "wired")}
        assert leases == {views[0][0]["reservation_id"]}, party
    _assert_released(deployment, "wired")
    # only the recipients (and the submitter, its owner) read the result dataset
    dataset = states[0]["results"]["result"][0]
    assert deployment.store(0, "GET", f"/v1/datasets/{dataset}", "mallory").status_code == 404
    _assert_job_credentials(wired, "wired", [dataset])


def _assert_job_credentials(wired: Wired, job_id: str, results: list[str]) -> None:
    """Issue 14 item 3: the workers read and wrote with the job's own credential, which
    named exactly the job's inputs and results and is revoked now that the job ended."""
    job_id = scoped_job_id("alice", job_id)
    for party in range(3):
        base = wired.deployment.root / f"store{party}"
        with sqlite3.connect(base / "metadata.db") as db:
            rows = db.execute(
                "SELECT inputs, results, revoked_at FROM job_tokens WHERE job_id = ?", (job_id,)
            ).fetchall()
        assert len(rows) == 1, (party, rows)
        inputs, written, revoked_at = rows[0]
        assert sorted(json.loads(inputs)) == sorted(wired.ids[n] for n in ("events", "events-b"))
        assert sorted(json.loads(written)) == sorted(results)
        assert revoked_at is not None, party
        reads = [
            json.loads(line)
            for line in (wired.deployment.root / f"store{party}.log").read_text().splitlines()
            if line.startswith("{") and '"dataset.use.read"' in line
        ]
        # this is the module's first job: every input read so far was this job's
        assert reads and all(r.get("job") == job_id for r in reads), (party, reads[:3])


def test_sigkilled_worker_resumes_and_no_tuple_is_consumed_twice(wired: Wired) -> None:
    deployment, job_id = wired.deployment, "wired-crash"
    responses = deployment.execution.submit(wired.job(job_id, ["alice"]))
    assert all(r.status_code == 201 for r in responses)
    total = deployment.execution.job(0, job_id)["stages_total"]
    target = random.Random().randint(2, total - 3)
    deadline = time.monotonic() + 90
    while True:
        status = deployment.execution.worker_status(1, job_id)
        if status.get("stage", 0) >= target and status.get("phase") == "Running":
            os.kill(status["pid"], signal.SIGKILL)
            break
        assert time.monotonic() < deadline, status
        time.sleep(0.01)
    states = deployment.execution.wait(job_id, timeout=120)
    assert [s["phase"] for s in states] == ["Succeeded"] * 3, (target, states)
    assert [s["restarts"] for s in states] == [0, 1, 0]
    _check(wired, states, "alice")
    for party in range(3):
        epochs = {entry["epoch"] for entry in deployment.ledger(party, job_id)}
        assert len(epochs) == 2, f"party {party}: one resume, in a new epoch"
        drawn = _consumed_tuples(deployment, party, job_id)
        for kind, identities in drawn.items():
            tuples = [identity[:2] for identity in identities]
            assert len(tuples) == len(set(tuples)), f"party {party} drew a {kind} tuple twice"
        # every chunk drawn from is consumed, for good, by the lease that drew it
        chunk_states = _chunk_states(deployment, party)
        for kind, identities in drawn.items():
            if kind != "shuffle":
                for chunk, _, lease in identities:
                    assert chunk_states[chunk] == ("consumed", lease), (party, kind, chunk)
    _assert_released(deployment, job_id)


@pytest.mark.parametrize(
    ("who", "dataset", "status", "code"),
    [
        ("alice", "3f6c2a8e-0000-4000-8000-000000000000", 404, "unknown_dataset"),
        ("alice", "not-a-dataset-id", 404, "unknown_dataset"),
        ("mallory", "events", 404, "unknown_dataset"),  # no grant: the dataset is invisible
        ("bob", "events", 403, "dataset_forbidden"),  # bob's use grant covers "sum" only
    ],
)
def test_inputs_the_submitter_may_not_use_are_refused(
    wired: Wired, who: str, dataset: str, status: int, code: str
) -> None:
    spec = wired.job("wired-refused", [who], inputs={"events": wired.ids.get(dataset, dataset)})
    response = wired.deployment.execution.request(0, "POST", "/v1/jobs", who, json=spec)
    assert response.status_code == status, response.text
    assert response.json()["error"] == code


def test_privacy_budget_is_charged_per_job_and_enforced_at_every_party(wired: Wired) -> None:
    deployment = wired.deployment
    data, valid = _events(600, 7)
    shares = share_table(data, SPECS, 3, valid=valid)
    budgeted = deployment.upload("budgeted", shares, SPECS, owner="alice", dp_budget=1.0)
    aggregations = {"total": ["views", "sum"], "n": ["views", "count"]}
    params = {"keys": ["region"], "aggregations": aggregations, "domain": list(range(12))}
    dp = {"epsilon": 0.3, "delta": 1e-6, "clip": {"views": [0, 100]}}  # count, a sum: 0.6

    def job(job_id: str, **changes: Any) -> dict[str, Any]:
        return wired.job(
            job_id, ["alice"], **{"inputs": {"events": [budgeted]}, "params": params, **changes}
        )

    def spent() -> list[float]:
        return [
            deployment.store(p, "GET", f"/v1/datasets/{budgeted}").json()["dp_spent"]
            for p in range(3)
        ]

    refused = deployment.execution.submit(job("dp-none"))
    assert all(r.status_code == 422 for r in refused), [r.text for r in refused]
    assert all(r.json()["error"] == "dp_required" for r in refused)
    extremes = dict(aggregations, low=["views", "min"])
    refused = deployment.execution.submit(
        job("dp-min", dp=dp, params={**params, "aggregations": extremes})
    )
    assert all(r.status_code == 422 and "min and max" in r.json()["detail"] for r in refused)
    # the analyst may not type a sensitivity, nor leave a summed column unclipped, nor
    # run dp without a public domain (the released keys would depend on the data)
    for changes, words in [
        ({"dp": {"epsilon": 0.3, "delta": 1e-6, "sensitivity": 1}}, "not set by the analyst"),
        ({"dp": {"epsilon": 0.3, "delta": 1e-6}}, "clip bounds: set dp.clip for views"),
        (
            {"dp": dp, "params": {**params, "domain": None, "max_groups": 12}},
            "public domain",
        ),
    ]:
        refused = deployment.execution.submit(job("dp-bad", **changes))
        assert all(r.status_code == 422 and words in r.json()["detail"] for r in refused), [
            r.text for r in refused
        ]

    assert all(r.status_code == 201 for r in deployment.execution.submit(job("dp-1", dp=dp)))
    states = deployment.execution.wait("dp-1", timeout=120)
    assert [s["phase"] for s in states] == ["Succeeded"] * 3, states
    assert spent() == pytest.approx([0.6] * 3)
    deltas = [
        deployment.store(p, "GET", f"/v1/datasets/{budgeted}").json()["dp_delta_spent"]
        for p in range(3)
    ]
    assert deltas == pytest.approx([2e-6] * 3)  # delta is charged too: two releases

    # listing the dataset twice counts each row twice: twice the epsilon (1.2 > 0.4 left)
    twice = job("dp-twice", dp=dp, inputs={"events": [budgeted, budgeted]})
    assert all(r.status_code == 201 for r in deployment.execution.submit(twice))
    states = deployment.execution.wait("dp-twice", timeout=120)
    assert [s["phase"] for s in states] == ["Failed"] * 3, states
    assert any("needs 1.2" in s["reason"] for s in states), states

    assert all(r.status_code == 201 for r in deployment.execution.submit(job("dp-2", dp=dp)))
    states = deployment.execution.wait("dp-2", timeout=120)
    assert [s["phase"] for s in states] == ["Failed"] * 3, states
    assert any("budget" in s["reason"] and "0.4 left" in s["reason"] for s in states), states
    assert spent() == pytest.approx([0.6] * 3)  # nothing charged for the refused job
    assert all(deployment.execution.worker_status(p, "dp-2") == {} for p in range(3))


def test_a_failed_job_releases_its_reservation(wired: Wired) -> None:
    deployment, job_id = wired.deployment, "wired-lost"
    responses = deployment.execution.submit(wired.job(job_id, ["alice"]))
    assert all(r.status_code == 201 for r in responses)
    deadline = time.monotonic() + 60
    while deployment.execution.worker_status(2, job_id).get("stage", 0) < 3:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    deployment.execution.kill(2)  # party 2's execution service is gone for this job
    try:
        states = deployment.execution.wait(job_id, parties=[0, 1], timeout=60)
        assert [s["phase"] for s in states] == ["Failed", "Failed"], states
        assert "stayed away longer than 5 s" in states[0]["reason"], states[0]["reason"]
        _assert_released(deployment, job_id)
    finally:
        deployment.execution.start(2)


JOIN_VIEWS = {"user_id": ColumnSpec("int"), "campaign": ColumnSpec("key", bits=3)}
JOIN_BUYS = {"user_id": ColumnSpec("int"), "amount": ColumnSpec("int")}


def _attribution_plan(threshold: int) -> dict[str, Any]:
    """purchases (bob, one row per user) joined to views (alice), amount > threshold,
    sum and count per campaign: the plan's canonical JSON object."""
    joined = {
        "type": "Join",
        "unique": {"type": "Scan", "table": "buys"},
        "many": {"type": "Scan", "table": "views"},
        "on": "user_id",
    }
    predicate = {
        "type": "Binary",
        "op": ">",
        "left": {"type": "Col", "name": "amount"},
        "right": {"type": "Lit", "value": threshold},
    }
    return {
        "type": "Aggregate",
        "input": {"type": "Filter", "input": joined, "predicate": predicate},
        "keys": ["campaign"],
        "aggregations": [["total", "amount", "sum"], ["n", "amount", "count"]],
        "domain": None,
    }


def test_a_query_joins_two_owners_datasets_filters_and_aggregates(wired: Wired) -> None:
    """Issue 15, through the services: alice's views joined to bob's purchases on the
    user id, filtered, summed per campaign — against pandas; bob's policy gates it."""
    deployment = wired.deployment
    rng = np.random.default_rng(15)
    users = rng.permutation(4000)[:600]
    buys = {"user_id": users, "amount": rng.integers(-20, 200, len(users))}
    views = {"user_id": rng.choice(users[:500], 900), "campaign": rng.integers(0, 6, 900)}
    views["user_id"][:50] = 5000 + np.arange(50)  # users who bought nothing: no match
    ids = {
        "views": deployment.upload("views", share_table(views, JOIN_VIEWS, 3), JOIN_VIEWS),
        "buys": deployment.upload(
            "buys",
            share_table(buys, JOIN_BUYS, 3),
            JOIN_BUYS,
            owner="bob",
            use={"alice": ["query"]},
        ),
    }
    job = {
        "id": "attribution",
        "program": "query",
        "inputs": {"views": ids["views"], "buys": ids["buys"]},
        "params": {"plan": _attribution_plan(0)},
        "outputs": {"result": {"kind": "shares", "recipients": ["alice"]}},
    }
    # bob's dataset allows the aggregates only until bob lists query
    refused = deployment.execution.submit(job)
    assert [r.status_code for r in refused] == [403] * 3, [r.text for r in refused]
    assert all(
        "rule programs: program 'query' is not allowed" in r.json()["detail"] for r in refused
    )
    # a plan that cannot run is refused before anything runs, with its reason
    bad = {
        **job,
        "id": "attribution-bad",
        "params": {"plan": {**_attribution_plan(0), "keys": ["region"]}},
    }
    deployment.set_policy(ids["buys"], {"programs": ["groupby", "query"]}, "bob")
    answers = deployment.execution.submit(bad)
    assert [r.status_code for r in answers] == [422] * 3, [r.text for r in answers]
    assert "unknown group-by column 'region'" in answers[0].json()["detail"]
    accepted = deployment.execution.submit(job)
    assert [r.status_code for r in accepted] == [201] * 3, [r.text for r in accepted]
    states = deployment.execution.wait("attribution", timeout=180)
    assert {s["phase"] for s in states} == {"Succeeded"}, states
    (dataset,) = {s["results"]["result"][0] for s in states}
    got = pd.DataFrame(deployment.open_result(dataset, "alice")).set_index("campaign").sort_index()
    merged = pd.DataFrame(views).merge(pd.DataFrame(buys), on="user_id")
    expected = (
        merged[merged["amount"] > 0]
        .groupby("campaign")
        .agg(total=("amount", "sum"), n=("amount", "count"))
    )
    assert list(got.index) == list(expected.index)
    np.testing.assert_array_equal(got["total"].to_numpy(), expected["total"].to_numpy())
    np.testing.assert_array_equal(got["n"].to_numpy(), expected["n"].to_numpy())
    # the same question as SQL in params.sql: every party compiles the same plan
    sql = (
        "SELECT campaign, SUM(amount) AS total, COUNT(*) AS n FROM views "
        "JOIN buys USING (user_id) WHERE amount > 0 GROUP BY campaign"
    )
    as_sql = {**job, "id": "attribution-sql", "params": {"sql": sql}}
    accepted = deployment.execution.submit(as_sql)
    assert [r.status_code for r in accepted] == [201] * 3, [r.text for r in accepted]
    states = deployment.execution.wait("attribution-sql", timeout=180)
    assert {s["phase"] for s in states} == {"Succeeded"}, states
    (dataset,) = {s["results"]["result"][0] for s in states}
    again = pd.DataFrame(deployment.open_result(dataset, "alice")).set_index("campaign")
    pd.testing.assert_frame_equal(again.sort_index(), got)
    window = {
        **job,
        "id": "attribution-window",
        "params": {"sql": sql.replace(")", ") OVER ()", 1)},
    }
    answers = deployment.execution.submit(window)
    assert [r.status_code for r in answers] == [422] * 3, [r.text for r in answers]
    assert "window functions are not supported" in answers[0].json()["detail"]
