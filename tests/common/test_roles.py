"""Role-based permissions (issue 14 Deliver 2): provider, analyst, party-admin, service.

A token restricted to some roles is refused, with the missing role named, on every
route that needs another, and nothing is written; a static token that lists no roles
keeps every role.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from tally.common.auth import Principal, TokenSpec, require_role
from tally.common.blobstore import LocalBlobStore
from tally.common.db import make_engine
from tally.common.errors import ApiError
from tally.execution.app import create_app as execution_app
from tally.execution.settings import ExecutionSettings
from tally.mpc.processes import free_ports
from tally.secret_store import SecretStoreSettings
from tally.secret_store import create_app as store_app
from tally.tuples.app import create_app as tuples_app
from tally.tuples.node import TupleNode
from tally.tuples.settings import TuplesSettings
from tally.tuples.store import ChunkStore, migrate

TOKENS = {
    "prov": ("prov-token-0123456789abcdef", ["provider"]),
    "ana": ("ana-token-0123456789abcdefgh", ["analyst"]),
    "admin": ("admin-token-0123456789abcdef", ["party-admin"]),
    "legacy": ("legacy-token-0123456789abcdef", None),
}


def specs() -> list[dict[str, Any]]:
    return [
        {"identity": name, "token": token, "roles": roles}
        for name, (token, roles) in TOKENS.items()
    ]


def bearer(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[name][0]}"}


def test_a_principal_without_a_role_is_refused_with_the_role_named() -> None:
    with pytest.raises(ApiError) as refused:
        require_role(Principal("ana", roles=frozenset({"analyst"})), "provider", "uploading")
    assert refused.value.status_code == 403
    assert "uploading needs the 'provider' role (this token's roles: analyst)" in str(
        refused.value.detail
    )
    require_role(Principal("legacy"), "provider", "uploading")  # no roles listed: every role
    with pytest.raises(ApiError, match="roles: none"):
        require_role(Principal("jwt", roles=frozenset()), "analyst", "submitting")


def test_unknown_roles_in_a_token_spec_are_refused() -> None:
    with pytest.raises(ValidationError, match="unknown roles \\['admin'\\]"):
        TokenSpec(identity="x", token="x-token-0123456789abcdef", roles=["admin"])  # type: ignore[arg-type]


DATASET = {"name": "views", "columns": [{"name": "v", "kind": "int"}], "rows": 2}


def test_only_providers_bring_data_into_the_secret_store(tmp_path: Path) -> None:
    settings = SecretStoreSettings(
        tokens=specs(),  # type: ignore[arg-type]
        database_url=f"sqlite:///{tmp_path / 'store.db'}",
        blob_dir=tmp_path / "blobs",
    )
    with TestClient(store_app(settings)) as client:
        refused = client.post("/v1/datasets", json=DATASET, headers=bearer("ana"))
        assert refused.status_code == 403, refused.text
        assert "'provider' role" in refused.json()["detail"]
        masks = client.post("/v1/input-masks", json={"count": 4}, headers=bearer("ana"))
        assert masks.status_code == 403 and "'provider' role" in masks.json()["detail"]
        listing = client.get("/v1/datasets", headers=bearer("ana")).json()
        assert listing["items"] == []  # nothing was written for the refused requests
        for name in ("prov", "legacy"):
            created = client.post("/v1/datasets", json=DATASET, headers=bearer(name))
            assert created.status_code == 201, created.text


def test_only_analysts_submit_jobs(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    settings = ExecutionSettings(
        party=0,
        peers=[f"127.0.0.1:{port}"],
        state_dir=tmp_path,
        tokens=specs(),  # type: ignore[arg-type]
    )
    job = {
        "id": "role-check",
        "program": "groupby",
        "inputs": {"events": ["no-such-dataset"]},
        "params": {"keys": ["region"], "aggs": {"views": "sum"}},
        "outputs": {"result": {"kind": "open", "recipients": ["ana"]}},
    }
    with TestClient(execution_app(settings)) as client:
        refused = client.post("/v1/jobs", json=job, headers=bearer("prov"))
        assert refused.status_code == 403, refused.text
        assert "submitting a job needs the 'analyst' role" in refused.json()["detail"]
        # an analyst gets past the role check (to the job's own validation)
        passed = client.post("/v1/jobs", json=job, headers=bearer("ana"))
        assert passed.status_code == 404, passed.text
        assert passed.json()["error"] == "unknown_dataset"
    jobs = tmp_path / "jobs"
    assert not jobs.exists() or not any(jobs.iterdir())


@pytest.fixture
def tuple_client(tmp_path: Path) -> Iterator[TestClient]:
    url = f"sqlite:///{tmp_path / 'index.db'}"
    settings = TuplesSettings(
        party=1,
        peers=["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"],
        database_url=url,
        tokens=specs(),  # type: ignore[arg-type]
    )
    migrate(url)
    node = TupleNode(settings, ChunkStore(make_engine(url), LocalBlobStore(tmp_path)), {})
    node.ready.set()
    with TestClient(tuples_app(node)) as client:
        yield client
    node.stop()


def test_only_party_admins_ask_for_tuple_generation(tuple_client: TestClient) -> None:
    for name in ("prov", "ana"):
        refused = tuple_client.post(
            "/v1/pools/triples/generate", json={"tuples": 10}, headers=bearer(name)
        )
        assert refused.status_code == 403, refused.text
        assert "'party-admin' role" in refused.json()["detail"]
    allowed = tuple_client.post(
        "/v1/pools/triples/generate", json={"tuples": 10}, headers=bearer("admin")
    )
    # past the role check: this party is a follower, which refuses to lead
    assert allowed.status_code == 409, allowed.text
    assert "only the leader (party 0)" in allowed.json()["detail"]
