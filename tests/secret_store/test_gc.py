"""Garbage collection of abandoned uploads, expired masks and orphaned blobs."""

from __future__ import annotations

from datetime import timedelta

from tally.secret_store.datasets import utcnow
from tally.secret_store.gc import collect_garbage
from tally.secret_store.masks import mask_blob_key
from tally.secret_store.models import DELETING, Dataset
from tests.secret_store.conftest import Api, random_shares


def test_abandoned_pending_datasets_are_removed_after_the_timeout(api: Api) -> None:
    committed_id, _ = api.committed()
    pending = api.create().json()
    api.upload(pending["id"], "region", random_shares(4).tobytes())
    soon = collect_garbage(api.store)
    assert soon.datasets == 0
    later = utcnow() + timedelta(seconds=api.store.settings.pending_timeout_s + 1)
    report = collect_garbage(api.store, now=later)
    assert report.datasets == 1
    assert not list(api.store.blobs.list(f"datasets/{pending['id']}/"))
    assert list(api.store.blobs.list(f"datasets/{committed_id}/"))
    counts, _ = api.snapshot()
    assert counts["datasets"] == 1
    assert api.upload(pending["id"], "views", random_shares(4).tobytes()).status_code == 404
    assert api.request("GET", f"/v1/datasets/{committed_id}").status_code == 200


def test_expired_unused_masks_are_removed(api: Api) -> None:
    reservation = api.request("POST", "/v1/input-masks", json={"count": 8}).json()
    later = utcnow() + timedelta(seconds=api.store.settings.mask_timeout_s + 1)
    assert collect_garbage(api.store).masks == 0
    assert collect_garbage(api.store, now=later).masks == 1
    assert api.request("GET", f"/v1/input-masks/{reservation['id']}").status_code == 404
    assert not list(api.store.blobs.list("masks/"))


def test_orphaned_mask_blobs_are_removed_once_old(api: Api) -> None:
    old = int((utcnow() - timedelta(seconds=api.store.settings.mask_timeout_s + 5)).timestamp())
    stale = mask_blob_key("00000000-0000-4000-8000-000000000001", old)
    fresh = mask_blob_key("00000000-0000-4000-8000-000000000002", int(utcnow().timestamp()))
    api.store.blobs.put(stale, b"\x00" * 8)
    api.store.blobs.put(fresh, b"\x00" * 8)
    assert collect_garbage(api.store).orphan_blobs == 1
    assert sorted(api.store.blobs.list("masks/")) == [fresh]


def test_interrupted_delete_is_finished(api: Api) -> None:
    dataset_id, _ = api.committed()
    with api.store.sessions() as session, session.begin():
        dataset = session.get(Dataset, dataset_id)
        assert dataset is not None
        dataset.state = DELETING  # as if the server died after hiding the dataset
    assert api.request("GET", f"/v1/datasets/{dataset_id}").status_code == 404
    assert collect_garbage(api.store).datasets == 1
    counts, blobs = api.snapshot()
    assert counts["datasets"] == counts["shares"] == counts["tags"] == 0
    assert blobs == []


def test_revoked_and_expired_job_tokens_are_removed(api: Api) -> None:
    def issue(job_id: str) -> None:
        body = {"job_id": job_id, "identity": "alice", "program": "p", "inputs": [], "ttl_s": 60}
        response = api.request("POST", "/v1/internal/job-tokens", "execution", json=body)
        assert response.status_code == 201, response.text

    issue("ended")
    issue("running")
    assert api.request("DELETE", "/v1/internal/job-tokens/ended", "execution").is_success
    assert collect_garbage(api.store).job_tokens == 1  # the revoked one
    assert api.snapshot()[0]["job_tokens"] == 1
    later = utcnow() + timedelta(seconds=61)
    assert collect_garbage(api.store, now=later).job_tokens == 1  # the expired one
    assert api.snapshot()[0]["job_tokens"] == 0
