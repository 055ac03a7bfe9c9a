"""Quotas per identity and ids nobody can squat (issue 14 items 5 and 6).

What was wrong: one identity could create datasets, reserve masks and leave uploads
pending without bound (one provider fills the party's disk); a provider could create
a dataset under the id a future job's result will have (result ids are uuid5 of the
job id, which anyone can compute); and a job id already charged to a dataset's
privacy budget answered a later job of another identity as if it had been charged.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

from tally.execution.remote import result_dataset_id
from tests.secret_store.conftest import Api, new_id


def test_pending_datasets_per_identity_are_capped_and_a_refusal_stores_nothing(
    make_api: Callable[..., Api],
) -> None:
    api: Api = make_api(max_pending_per_identity=2)
    assert api.create().status_code == 201 and api.create().status_code == 201
    before = api.snapshot()
    refused = api.create()
    assert refused.status_code == 429, refused.text
    body = refused.json()
    assert body["error"] == "quota_exceeded" and "max_pending_per_identity" in body["detail"]
    assert api.snapshot() == before
    # another identity has its own quota
    assert api.create("bob").status_code == 201


def test_an_identical_retry_is_answered_even_when_the_quota_is_full(
    make_api: Callable[..., Api],
) -> None:
    api: Api = make_api(max_pending_per_identity=1)
    dataset_id = new_id()
    assert api.create(id=dataset_id).status_code == 201
    retry = api.create(id=dataset_id)
    assert retry.status_code == 200 and retry.json()["id"] == dataset_id


def test_committing_frees_a_pending_slot_but_owned_datasets_are_capped(
    make_api: Callable[..., Api],
) -> None:
    api: Api = make_api(max_pending_per_identity=1, max_datasets_per_identity=2)
    api.committed()
    api.committed(seed=1)  # the pending slot was freed by the first commit
    refused = api.create()
    assert refused.status_code == 429 and "max_datasets_per_identity" in refused.json()["detail"]


def test_declared_bytes_per_identity_include_live_masks(make_api: Callable[..., Api]) -> None:
    # two columns x 4 rows x 8 bytes = 64 bytes per default dataset
    api: Api = make_api(max_bytes_per_identity=150)
    assert api.create().status_code == 201
    assert api.create().status_code == 201
    refused = api.create()
    assert refused.status_code == 413, refused.text
    assert "max_bytes_per_identity" in refused.json()["detail"]
    # 128 used: a reservation of 3 masks (24 bytes) is over, 2 (16 bytes) fits
    before = api.snapshot()
    over = api.request("POST", "/v1/input-masks", json={"count": 3})
    assert over.status_code == 413 and api.snapshot() == before
    assert api.request("POST", "/v1/input-masks", json={"count": 2}).status_code == 201


def test_live_mask_reservations_are_capped_and_a_refusal_leaves_no_blob(
    make_api: Callable[..., Api],
) -> None:
    api: Api = make_api(max_mask_reservations_per_identity=2)
    for _ in range(2):
        assert api.request("POST", "/v1/input-masks", json={"count": 10}).status_code == 201
    before = api.snapshot()
    refused = api.request("POST", "/v1/input-masks", json={"count": 10})
    assert refused.status_code == 429, refused.text
    assert "max_mask_reservations_per_identity" in refused.json()["detail"]
    assert api.snapshot() == before
    assert api.request("POST", "/v1/input-masks", "bob", json={"count": 10}).status_code == 201


def test_results_written_by_the_service_do_not_take_a_pending_slot(
    make_api: Callable[..., Api],
) -> None:
    api: Api = make_api(max_pending_per_identity=1)
    assert api.create().status_code == 201  # alice's one pending upload
    result = {
        "id": result_dataset_id("job-7", "totals"),
        "name": "job-7 totals",
        "columns": [{"name": "total", "kind": "int"}],
        "rows": 3,
        "owner": "alice",
    }
    written = api.request("POST", "/v1/internal/datasets", "execution", json=result)
    assert written.status_code == 201, written.text


def test_a_client_cannot_take_the_id_of_a_future_result_dataset(api: Api) -> None:
    squatted = result_dataset_id("job-42", "totals")
    assert uuid.UUID(squatted).version == 5
    before = api.snapshot()
    refused = api.create(id=squatted)
    assert refused.status_code == 422, refused.text
    assert "version 4" in refused.text
    assert api.snapshot() == before
    assert api.create(id=new_id()).status_code == 201


def test_a_job_id_charged_for_one_identity_is_not_reusable_by_another(api: Api) -> None:
    dataset, _ = api.committed(dp_budget=10.0)
    assert api.request("PUT", f"/v1/datasets/{dataset}/grants/bob/use").is_success
    charge = {"job_id": "job-9", "identity": "alice", "program": "groupby", "epsilon": 1.0}
    url = f"/v1/internal/datasets/{dataset}/dp-charges"
    assert api.request("POST", url, "execution", json=charge).status_code == 201
    again = api.request("POST", url, "execution", json=charge)
    assert again.status_code == 200  # a restarted service's retry
    for changed in ({"identity": "bob"}, {"program": "sum"}):
        reused = api.request("POST", url, "execution", json={**charge, **changed})
        assert reused.status_code == 409, (changed, reused.text)
        assert "not reusable" in reused.json()["detail"]
