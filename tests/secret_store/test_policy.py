"""A dataset's disclosure policy: set by its owner, read by grantees and the execution service."""

from __future__ import annotations

from typing import Any

import pytest

from tests.secret_store.conftest import Api

STRICT = {
    "programs": ["groupby"],
    "recipients": {"submitter": False, "readers": True, "identities": ["carol"]},
    "min_group_size": 10,
    "dp": {
        "required": True,
        "epsilon_max": 1.0,
        "delta_max": 1e-5,
        "budget": 3.0,
        "delta_budget": 3e-6,
        "clip": {"views": [0, 100]},
        "unit": "views",
        "max_contributions": 5,
    },
}


def test_a_dataset_without_a_policy_allows_aggregates_to_the_submitter_only(api: Api) -> None:
    dataset_id, _ = api.committed()
    policy = api.request("GET", f"/v1/datasets/{dataset_id}/policy").json()
    assert policy["programs"] == ["groupby", "sum", "count"]
    assert policy["recipients"] == {"submitter": True, "readers": False, "identities": []}
    assert policy["min_group_size"] == 0 and policy["dp"]["required"] is False


def test_the_owner_sets_the_policy_grantees_read_it_others_cannot(api: Api) -> None:
    dataset_id, _ = api.committed()
    url = f"/v1/datasets/{dataset_id}/policy"
    assert api.request("PUT", f"/v1/datasets/{dataset_id}/grants/bob/use").status_code == 201
    put = api.request("PUT", url, json=STRICT)
    assert put.status_code == 200, put.text
    assert put.json() == STRICT
    assert api.request("GET", url, "bob").json() == STRICT  # a grantee sees what it may do
    meta = api.request("GET", f"/v1/datasets/{dataset_id}").json()
    assert meta["dp_budget"] == 3.0  # the policy's budget is the dataset's budget
    refused = api.request("PUT", url, "bob", json={})
    assert refused.status_code == 403 and "owner" in refused.json()["detail"]
    assert api.request("GET", url, "carol").status_code == 404  # no grant: invisible
    assert api.request("GET", url, "bob").json() == STRICT  # unchanged by the refusal


@pytest.mark.parametrize(
    ("policy", "words"),
    [
        ({"programs": ["not a program"]}, "programs"),
        ({"recipients": {"identities": ["bad identity!"]}}, "identities"),
        ({"min_group_size": -1}, "min_group_size"),
        ({"dp": {"clip": {"views": [5, 1]}}}, "lo <= hi"),
        ({"dp": {"max_contributions": 3}}, "needs the privacy unit"),
        ({"dp": {"epsilon_max": 0}}, "epsilon_max"),
        ({"sensitivity": 1}, "sensitivity"),
    ],
)
def test_a_malformed_policy_is_422_and_changes_nothing(
    api: Api, policy: dict[str, Any], words: str
) -> None:
    dataset_id, _ = api.committed()
    url = f"/v1/datasets/{dataset_id}/policy"
    before = api.request("GET", url).json()
    response = api.request("PUT", url, json=policy)
    assert response.status_code == 422, response.text
    assert words in response.text
    assert api.request("GET", url).json() == before


def test_the_execution_service_sees_policy_and_readers_with_an_input(api: Api) -> None:
    dataset_id, _ = api.committed()
    api.request("PUT", f"/v1/datasets/{dataset_id}/grants/bob/use")
    api.request("PUT", f"/v1/datasets/{dataset_id}/grants/carol/read")
    api.request("PUT", f"/v1/datasets/{dataset_id}/policy", json=STRICT)
    view = api.request(
        "GET",
        f"/v1/internal/datasets/{dataset_id}",
        "execution",
        params={"identity": "bob", "program": "groupby"},
    )
    assert view.status_code == 200, view.text
    assert view.json()["policy"] == STRICT and view.json()["readers"] == ["carol"]


def test_the_owners_delta_budget_is_enforced_when_jobs_are_charged(api: Api) -> None:
    dataset_id, _ = api.committed()
    api.request("PUT", f"/v1/datasets/{dataset_id}/policy", json={"dp": {"delta_budget": 3e-6}})
    url = f"/v1/internal/datasets/{dataset_id}/dp-charges"

    def charge(job: str, delta: float) -> Any:
        body = {"job_id": job, "identity": "alice", "program": "groupby", "epsilon": 0.1}
        return api.request("POST", url, "execution", json={**body, "delta": delta})

    assert charge("a", 2e-6).status_code == 201
    refused = charge("b", 2e-6)
    assert refused.status_code == 409 and "delta budget" in refused.json()["detail"]
    assert charge("c", 1e-6).status_code == 201
    meta = api.request("GET", f"/v1/datasets/{dataset_id}").json()
    assert meta["dp_delta_spent"] == pytest.approx(3e-6)
