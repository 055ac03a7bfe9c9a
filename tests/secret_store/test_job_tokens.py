"""Job tokens (issue 14 item 3): a job's workers read only its inputs and write only its results.

Before them, every worker carried the party's service credential, which reads any
dataset for any identity.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from sqlalchemy import select

from tally.secret_store.models import JobToken
from tests.secret_store.conftest import Api, random_shares, sha256


def issue(api: Api, inputs: list[str], results: list[dict[str, Any]], **changes: Any) -> str:
    body = {
        "job_id": "job-7",
        "identity": "alice",
        "program": "groupby",
        "inputs": inputs,
        "results": results,
        "ttl_s": 600,
        **changes,
    }
    response = api.request("POST", "/v1/internal/job-tokens", "execution", json=body)
    assert response.status_code == 201, response.text
    token: str = response.json()["token"]
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


RESULT = {
    "name": "job-7 output",
    "columns": [{"name": "total", "kind": "int"}],
    "rows": 3,
    "owner": "alice",
    "readers": ["bob"],
}


def test_a_job_token_reads_only_its_inputs_for_its_identity_and_program(api: Api) -> None:
    mine, _ = api.committed()
    other, _ = api.committed(seed=1)
    token = issue(api, [mine], [])
    query = {"identity": "alice", "program": "groupby"}
    read = api.request("GET", f"/v1/internal/datasets/{mine}", headers=bearer(token), params=query)
    assert read.status_code == 200, read.text
    column = api.request(
        "GET", f"/v1/internal/datasets/{mine}/columns/views", headers=bearer(token), params=query
    )
    assert column.status_code == 200
    refused = api.request(
        "GET", f"/v1/internal/datasets/{other}", headers=bearer(token), params=query
    )
    assert refused.status_code == 403 and "not an input of the job" in refused.json()["detail"]
    for changed in ({"identity": "bob"}, {"program": "sum"}):
        response = api.request(
            "GET",
            f"/v1/internal/datasets/{mine}",
            headers=bearer(token),
            params={**query, **changed},
        )
        assert response.status_code == 403, changed
    # a worker's credential never spends a privacy budget, not even its own inputs'
    charge = {"job_id": "job-7", "identity": "alice", "program": "groupby", "epsilon": 1.0}
    spent = api.request(
        "POST", f"/v1/internal/datasets/{mine}/dp-charges", headers=bearer(token), json=charge
    )
    assert spent.status_code == 403 and "only reads the job's inputs" in spent.json()["detail"]
    # the service credential itself still reads both (it issues the tokens)
    assert api.request(
        "GET", f"/v1/internal/datasets/{other}", "execution", params=query
    ).is_success


def test_a_job_token_writes_only_its_results(api: Api) -> None:
    result_id = str(uuid.uuid4())
    token = issue(api, [], [{"id": result_id, "readers": ["bob"]}])
    stranger = api.request(
        "POST",
        "/v1/internal/datasets",
        headers=bearer(token),
        json={**RESULT, "id": str(uuid.uuid4())},
    )
    assert stranger.status_code == 403 and "not a result of the job" in stranger.json()["detail"]
    other_readers = api.request(
        "POST",
        "/v1/internal/datasets",
        headers=bearer(token),
        json={**RESULT, "id": result_id, "readers": ["carol"]},
    )
    assert other_readers.status_code == 403
    created = api.request(
        "POST", "/v1/internal/datasets", headers=bearer(token), json={**RESULT, "id": result_id}
    )
    assert created.status_code == 201, created.text
    data = random_shares(3).tobytes()
    uploaded = api.upload(result_id, "total", data, Authorization=f"Bearer {token}")
    assert uploaded.status_code == 201, uploaded.text
    committed = api.request("POST", f"/v1/datasets/{result_id}/commit", headers=bearer(token))
    assert committed.status_code == 200, committed.text
    read = api.request("GET", f"/v1/datasets/{result_id}/columns/total", "bob")
    assert read.headers["tally-sha256"] == sha256(data)

    # a provider's own dataset is out of reach, and so is every other route
    theirs, _ = api.committed()
    overwrite = api.upload(theirs, "views", data, Authorization=f"Bearer {token}")
    assert overwrite.status_code == 403
    for method, path in [
        ("GET", "/v1/datasets"),
        ("GET", f"/v1/datasets/{theirs}"),
        ("GET", f"/v1/datasets/{theirs}/columns/views"),
        ("PUT", f"/v1/datasets/{theirs}/policy"),
        ("POST", "/v1/input-masks"),
        ("POST", "/v1/internal/job-tokens"),
    ]:
        response = api.request(method, path, headers=bearer(token), json={})
        assert response.status_code == 403, (method, path, response.text)


def test_a_revoked_or_expired_job_token_is_refused(api: Api) -> None:
    mine, _ = api.committed()
    query = {"identity": "alice", "program": "groupby"}
    token = issue(api, [mine], [])
    revoked = api.request("DELETE", "/v1/internal/job-tokens/job-7", "execution")
    assert revoked.status_code == 200 and revoked.json() == {"revoked": 1}
    after = api.request("GET", f"/v1/internal/datasets/{mine}", headers=bearer(token), params=query)
    assert after.status_code == 401 and "revoked" in after.json()["detail"]

    short = issue(api, [mine], [], job_id="job-8", ttl_s=0.05)
    time.sleep(0.1)
    expired = api.request(
        "GET", f"/v1/internal/datasets/{mine}", headers=bearer(short), params=query
    )
    assert expired.status_code == 401 and "expired" in expired.json()["detail"]
    unknown = api.request(
        "GET", f"/v1/internal/datasets/{mine}", headers=bearer("tjob_" + "x" * 43), params=query
    )
    assert unknown.status_code == 401


def test_only_the_service_credential_issues_job_tokens_and_only_digests_are_kept(
    api: Api,
) -> None:
    body = {"job_id": "j", "identity": "alice", "program": "p", "inputs": [], "ttl_s": 5}
    refused = api.request("POST", "/v1/internal/job-tokens", "alice", json=body)
    assert refused.status_code == 403
    assert api.request("DELETE", "/v1/internal/job-tokens/j", "bob").status_code == 403
    token = issue(api, [], [])
    with api.store.sessions() as session:
        rows = session.scalars(select(JobToken)).all()
    assert len(rows) == 1
    stored = " ".join(str(getattr(rows[0], c.name)) for c in JobToken.__table__.columns)
    assert token not in stored and token[5:] not in stored
