"""Health, readiness, metrics, OpenAPI docs, settings and migrations."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from pydantic import ValidationError

from tally.common.blobstore import LocalBlobStore
from tally.secret_store import SecretStoreSettings
from tally.secret_store.models import Base
from tests.secret_store.conftest import Api


def test_healthz_and_readyz(api: Api) -> None:
    assert api.client.get("/healthz").json() == {"status": "ok"}
    assert api.client.get("/readyz").json() == {"status": "ready"}


def test_readyz_reports_an_unreachable_blob_store(api: Api, tmp_path: Path) -> None:
    broken = LocalBlobStore(tmp_path / "gone")
    shutil.rmtree(broken.root)
    api.store.blobs = broken
    response = api.client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["error"] == "not_ready"


def test_metrics_count_requests_by_route_template(api: Api) -> None:
    dataset_id, _ = api.committed()
    api.request("GET", f"/v1/datasets/{dataset_id}")
    text = api.client.get("/metrics").text
    assert 'route="/v1/datasets/{dataset_id}"' in text
    assert dataset_id not in text
    assert "tally_secret_store_uploaded_bytes_total 64.0" in text
    assert "tally_secret_store_commits_total 1.0" in text


def test_openapi_and_docs_are_served(api: Api) -> None:
    schema = api.client.get("/openapi.json").json()
    upload = schema["paths"]["/v1/datasets/{dataset_id}/columns/{column}"]["put"]
    assert "application/octet-stream" in upload["requestBody"]["content"]
    assert api.client.get("/docs").status_code == 200
    for path in schema["paths"].values():
        for operation in path.values():
            assert operation.get("summary") and operation.get("description"), operation


def test_migrations_match_the_models(api: Api) -> None:
    with api.store.engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []


def test_tokens_are_never_logged_or_shown(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    settings_text = repr(api.store.settings) + str(api.store.settings.model_dump())
    assert "alice-token" not in settings_text
    api.request("GET", "/v1/datasets")
    assert "alice-token" not in caplog.text


def production(**fields: object) -> SecretStoreSettings:
    https = {"https_cert": Path("rest.pem"), "https_key": Path("rest.key")}
    return SecretStoreSettings(env="production", **{**https, **fields})  # type: ignore[arg-type]


def test_production_refuses_plaintext_rest_database_and_s3() -> None:
    tokens = [{"identity": "alice", "sha256": "ab" * 32}]
    # before, production accepted all three in plaintext (regressions)
    with pytest.raises(ValidationError, match="plaintext secret-store listener"):
        production(tokens=tokens, https_cert=None, https_key=None)
    with pytest.raises(ValidationError, match="sslmode=verify-full"):
        production(tokens=tokens, database_url="postgresql+psycopg://s:p@db/store")
    with pytest.raises(ValidationError, match="S3_SECURE"):
        production(tokens=tokens, s3_endpoint="s3:9000", s3_secret_key="Kd82nQ-s3-secret-key-0123")
    # the release's own stores (reachable only from its pods) are named explicitly
    own = production(
        tokens=tokens,
        database_url="postgresql+psycopg://s:p@p0-tally-postgresql/store",
        s3_endpoint="p0-tally-minio:9000",
        s3_secret_key="Kd82nQ-s3-secret-key-0123",
        in_cluster_stores=["database", "s3"],
    )
    assert own.in_cluster_stores == ["database", "s3"]


def test_production_refuses_placeholder_tokens() -> None:
    for token in ("changeme", "dev-token", "short"):
        with pytest.raises(ValidationError, match="placeholder"):
            production(tokens=[{"identity": "alice", "token": token}])
    with pytest.raises(ValidationError, match="at least one token"):
        production()
    strong = "k" * 16 + "9f8e7d6c5b4a3210"
    assert production(tokens=[{"identity": "alice", "token": strong}]).env == "production"
    digest = "ab" * 32
    assert production(tokens=[{"identity": "alice", "sha256": digest}]).tokens[0].sha256 == digest


def test_production_refuses_debug_hooks_and_placeholder_s3_keys() -> None:
    tokens = [{"identity": "alice", "sha256": "ab" * 32}]
    with pytest.raises(ValidationError, match="development only"):
        production(tokens=tokens, debug_crash_after_blob_write=True)
    with pytest.raises(ValidationError, match="S3_SECRET_KEY"):
        production(tokens=tokens, s3_endpoint="s3:9000", s3_secret_key="minioadmin")


def test_settings_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TALLY_SECRET_STORE_DATABASE_URL", f"sqlite:///{tmp_path}/x.db")
    monkeypatch.setenv("TALLY_SECRET_STORE_PARTY", "2")
    monkeypatch.setenv(
        "TALLY_SECRET_STORE_TOKENS", '[{"identity": "acme", "token": "t", "service": true}]'
    )
    settings = SecretStoreSettings()
    assert settings.party == 2 and settings.tokens[0].service
    assert settings.database_url.endswith("x.db")


def test_a_fresh_store_starts_and_migrates(make_api: Callable[..., Api]) -> None:
    api = make_api()
    assert api.client.get("/readyz").status_code == 200
