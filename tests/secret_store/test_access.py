"""Tokens, ownership and grants: who may see, read, use and change a dataset."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tests.secret_store.conftest import EXPIRED_TOKEN, Api, random_shares, sha256


@pytest.mark.parametrize(
    ("headers", "detail"),
    [
        ({}, "missing bearer token"),
        ({"Authorization": "Bearer not-a-real-token"}, "invalid token"),
        ({"Authorization": "Basic YWxpY2U6cGFzcw=="}, "malformed"),
        ({"Authorization": "Bearer"}, "malformed"),
        ({"Authorization": f"Bearer {EXPIRED_TOKEN}"}, "token expired"),
    ],
)
def test_requests_without_a_valid_token_are_401(
    api: Api, headers: dict[str, str], detail: str
) -> None:
    dataset_id, _ = api.committed()
    before = api.snapshot()
    for method, url, kwargs in [
        ("GET", "/v1/datasets", {}),
        ("GET", f"/v1/datasets/{dataset_id}", {}),
        ("GET", f"/v1/datasets/{dataset_id}/columns/views", {}),
        ("DELETE", f"/v1/datasets/{dataset_id}", {}),
        (
            "POST",
            "/v1/datasets",
            {"json": {"name": "x", "columns": [{"name": "a", "kind": "int"}], "rows": 1}},
        ),
        ("POST", "/v1/input-masks", {"json": {"count": 4}}),
    ]:
        response = api.client.request(method, url, headers=headers, **kwargs)
        assert response.status_code == 401, (method, url)
        assert response.json()["error"] == "unauthorized"
        assert detail in response.json()["detail"]
        assert response.headers["www-authenticate"] == "Bearer"
    assert api.snapshot() == before


def test_another_owners_dataset_is_404_like_a_missing_one(api: Api) -> None:
    dataset_id, _ = api.committed()
    missing = "00000000-0000-4000-8000-000000000000"
    before = api.snapshot()
    for url in (f"/v1/datasets/{dataset_id}", f"/v1/datasets/{missing}"):
        for method, path in [
            ("GET", ""),
            ("GET", "/columns/views"),
            ("GET", "/tags"),
            ("GET", "/grants"),
            ("DELETE", ""),
            ("DELETE", "/tags/x"),
            ("PUT", "/grants/bob/read"),
        ]:
            response = api.request(method, url + path, "bob")
            assert response.status_code == 404, (method, url + path)
            body = response.json()
            assert body["error"] == "not_found"
            assert "dataset" in body["detail"]
    assert api.request("GET", "/v1/datasets", "bob").json()["total"] == 0
    assert api.snapshot() == before


def test_uploads_and_commits_belong_to_the_creator(api: Api) -> None:
    dataset = api.create().json()
    before = api.snapshot()
    data = random_shares(4).tobytes()
    assert api.upload(dataset["id"], "region", data, identity="bob").status_code == 404
    assert api.commit(dataset["id"], "bob").status_code == 404
    assert api.snapshot() == before


def test_read_grant_lets_a_grantee_read_but_not_manage(api: Api) -> None:
    dataset_id, columns = api.committed()
    grant = api.request("PUT", f"/v1/datasets/{dataset_id}/grants/bob/read")
    assert grant.status_code == 201
    assert grant.json()["grantee"] == "bob" and grant.json()["programs"] is None
    assert api.request("PUT", f"/v1/datasets/{dataset_id}/grants/bob/read").status_code == 200
    shares = api.request("GET", f"/v1/datasets/{dataset_id}/columns/views", "bob")
    assert shares.status_code == 200
    assert np.array_equal(np.frombuffer(shares.content, dtype="<u8"), columns["views"])
    assert api.request("GET", "/v1/datasets", "bob").json()["total"] == 1
    before = api.snapshot()
    for method, path, kwargs in [
        ("DELETE", "", {}),
        ("PUT", "/tags/x", {"json": {"value": "1"}}),
        ("GET", "/grants", {}),
        ("PUT", "/grants/carol/read", {}),
    ]:
        response = api.request(method, f"/v1/datasets/{dataset_id}{path}", "bob", **kwargs)
        assert response.status_code == 403, (method, path)
        assert response.json()["error"] == "forbidden"
    assert api.snapshot() == before
    assert api.request("DELETE", f"/v1/datasets/{dataset_id}/grants/bob/read").status_code == 204
    assert api.request("GET", f"/v1/datasets/{dataset_id}", "bob").status_code == 404


def test_use_grant_shows_metadata_but_not_shares(api: Api) -> None:
    dataset_id, _ = api.committed()
    api.request("PUT", f"/v1/datasets/{dataset_id}/grants/bob/use", json={"programs": ["groupby"]})
    assert api.request("GET", f"/v1/datasets/{dataset_id}", "bob").status_code == 200
    response = api.request("GET", f"/v1/datasets/{dataset_id}/columns/views", "bob")
    assert response.status_code == 403
    grants = api.request("GET", f"/v1/datasets/{dataset_id}/grants").json()
    assert [(g["grantee"], g["permission"], g["programs"]) for g in grants] == [
        ("bob", "use", ["groupby"])
    ]


def test_grant_validation(api: Api) -> None:
    dataset_id, _ = api.committed()
    url = f"/v1/datasets/{dataset_id}/grants"
    assert api.request("PUT", f"{url}/alice/read").status_code == 400
    assert api.request("PUT", f"{url}/bob/read", json={"programs": ["x"]}).status_code == 400
    assert api.request("PUT", f"{url}/bob/write").status_code == 422
    assert api.request("PUT", f"{url}/bad%2Fname/read").status_code in (404, 422)
    assert api.request("DELETE", f"{url}/bob/use").status_code == 404


def test_internal_routes_need_the_service_credential(api: Api) -> None:
    dataset_id, _ = api.committed()
    params = {"identity": "alice", "program": "groupby"}
    for url in (
        f"/v1/internal/datasets/{dataset_id}",
        f"/v1/internal/datasets/{dataset_id}/columns/views",
    ):
        response = api.request("GET", url, "alice", params=params)
        assert response.status_code == 403
    body = {"name": "r", "columns": [{"name": "a", "kind": "int"}], "rows": 1, "owner": "alice"}
    assert api.request("POST", "/v1/internal/datasets", "alice", json=body).status_code == 403


def test_execution_service_reads_inputs_under_use_grants(api: Api) -> None:
    dataset_id, columns = api.committed()
    url = f"/v1/internal/datasets/{dataset_id}/columns/views"

    def read(identity: str, program: str) -> int:
        params = {"identity": identity, "program": program}
        response = api.request("GET", url, "execution", params=params)
        if response.status_code == 200:
            assert np.array_equal(np.frombuffer(response.content, dtype="<u8"), columns["views"])
        return response.status_code

    assert read("alice", "groupby") == 200  # the owner's own job
    assert read("bob", "groupby") == 404
    api.request("PUT", f"/v1/datasets/{dataset_id}/grants/bob/use", json={"programs": ["groupby"]})
    assert read("bob", "groupby") == 200
    assert read("bob", "sum") == 403
    api.request("PUT", f"/v1/datasets/{dataset_id}/grants/bob/use", json={})
    assert read("bob", "sum") == 200
    api.request("PUT", f"/v1/datasets/{dataset_id}/grants/carol/read")
    assert read("carol", "groupby") == 403  # read is not use
    meta = api.request(
        "GET",
        f"/v1/internal/datasets/{dataset_id}",
        "execution",
        params={"identity": "bob", "program": "x"},
    )
    assert meta.status_code == 200 and meta.json()["id"] == dataset_id


def test_execution_service_writes_results_for_their_readers(api: Api) -> None:
    body = {
        "name": "job-42 output",
        "columns": [{"name": "total", "kind": "int"}],
        "rows": 3,
        "owner": "alice",
        "readers": ["bob"],
        "tags": {"job": "42"},
    }
    created = api.request("POST", "/v1/internal/datasets", "execution", json=body)
    assert created.status_code == 201, created.text
    result = created.json()
    assert result["owner"] == "alice" and result["state"] == "pending"
    data = random_shares(3).tobytes()
    assert api.upload(result["id"], "total", data, identity="execution").status_code == 201
    assert api.upload(result["id"], "total", data, identity="alice").status_code == 404
    assert api.commit(result["id"], "execution").status_code == 200
    for reader in ("alice", "bob"):
        response = api.request("GET", f"/v1/datasets/{result['id']}/columns/total", reader)
        assert response.status_code == 200 and response.headers["tally-sha256"] == sha256(data)
    assert api.request("GET", f"/v1/datasets/{result['id']}", "carol").status_code == 404
    assert api.request("GET", f"/v1/datasets/{result['id']}", "execution").status_code == 404


def test_privacy_budget_is_recorded_and_enforced_per_dataset(api: Api) -> None:
    dataset_id, _ = api.committed(dp_budget=1.0)
    url = f"/v1/internal/datasets/{dataset_id}/dp-charges"

    def charge(
        job: str,
        epsilon: float,
        identity: str = "alice",
        who: str = "execution",
        delta: float = 1e-6,
    ) -> Any:
        body = {
            "job_id": job,
            "identity": identity,
            "program": "groupby",
            "epsilon": epsilon,
            "delta": delta,
        }
        return api.request("POST", url, who, json=body)

    assert charge("job-a", 0.25, who="alice").status_code == 403  # service credential only
    first = charge("job-a", 0.25)
    assert first.status_code == 201, first.text
    assert first.json() == {
        "dataset_id": dataset_id,
        "job_id": "job-a",
        "epsilon": 0.25,
        "delta": 1e-6,
        "dp_budget": 1.0,
        "dp_spent": 0.25,
    }
    assert charge("job-a", 0.25).status_code == 200  # a retry is not a second spending
    assert charge("job-a", 0.5).status_code == 409  # the same job, another epsilon
    assert charge("job-a", 0.25, delta=2e-6).status_code == 409  # or another delta
    assert charge("job-b", 0.5).status_code == 201
    before = api.snapshot()
    refused = charge("job-c", 0.5)  # 0.25 left
    assert refused.status_code == 409
    assert refused.json()["error"] == "privacy_budget_exhausted"
    assert "0.25 left" in refused.json()["detail"] and "job-c" in refused.json()["detail"]
    assert api.snapshot() == before  # nothing recorded
    assert charge("job-d", 0.25, identity="bob").status_code == 404  # bob may not use it
    assert charge("job-d", 0.25).status_code == 201  # exactly what was left
    meta = api.request("GET", f"/v1/datasets/{dataset_id}").json()
    assert meta["dp_budget"] == 1.0 and meta["dp_spent"] == 1.0
    assert meta["dp_delta_spent"] == pytest.approx(3e-6)  # job-a, job-b, job-d
    for bad in ({"epsilon": 0}, {"epsilon": -1}, {"job_id": "no spaces"}, {"delta": 1.0}):
        body = {"job_id": "job-e", "identity": "alice", "program": "groupby", "epsilon": 0.1}
        assert api.request("POST", url, "execution", json={**body, **bad}).status_code == 422


def test_without_a_budget_spending_is_recorded_but_not_capped(api: Api) -> None:
    dataset_id, _ = api.committed()
    url = f"/v1/internal/datasets/{dataset_id}/dp-charges"
    for job in range(3):
        body = {"job_id": f"job-{job}", "identity": "alice", "program": "groupby", "epsilon": 5}
        assert api.request("POST", url, "execution", json=body).status_code == 201
    meta = api.request("GET", f"/v1/datasets/{dataset_id}").json()
    assert meta["dp_budget"] is None and meta["dp_spent"] == 15
    assert api.create(dp_budget=0).status_code == 422
    assert api.create(dp_budget=-1).status_code == 422
