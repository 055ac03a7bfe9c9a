"""Fixtures of the secret-store suite: every API test runs on both storage backends.

``backend`` is ``sqlite-local`` (SQLite file + local blob directory) or ``postgres-s3``
(a real PostgreSQL server + a real S3 server, from ``tests.servers``). ``api`` is an
``Api`` around a ``TestClient`` of a fresh app on a fresh database and bucket.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from httpx import Response
from numpy.typing import NDArray
from sqlalchemy import func, select

from tally.secret_store import SecretStoreSettings, create_app
from tally.secret_store.context import StoreContext
from tally.secret_store.models import Base

BACKENDS = ("sqlite-local", "postgres-s3")

TOKENS = {
    "alice": "alice-token-0123456789abcdef",
    "bob": "bob-token-0123456789abcdef",
    "carol": "carol-token-0123456789abcdef",
    "execution": "execution-token-0123456789abcdef",
}
EXPIRED_TOKEN = "expired-token-0123456789abcdef"


def token_specs() -> list[dict[str, Any]]:
    """Tokens of the test identities; ``execution`` is the party's service credential."""
    specs: list[dict[str, Any]] = [
        {"identity": name, "token": token, "service": name == "execution"}
        for name, token in TOKENS.items()
    ]
    specs.append(
        {
            "identity": "dave",
            "token": EXPIRED_TOKEN,
            "expires_at": (datetime.now(UTC) - timedelta(hours=1)).isoformat(),
        }
    )
    return specs


def auth(identity: str) -> dict[str, str]:
    """The Authorization header of a test identity."""
    return {"Authorization": f"Bearer {TOKENS[identity]}"}


def sha256(data: bytes) -> str:
    """Hex SHA-256, as the Tally-Sha256 header carries it."""
    return hashlib.sha256(data).hexdigest()


def random_shares(rows: int, seed: int = 0) -> NDArray[np.uint64]:
    """Uniformly random uint64 shares."""
    return np.random.default_rng(seed).integers(0, 2**64, size=rows, dtype=np.uint64)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The storage backend under test."""
    return str(request.param)


@pytest.fixture
def make_settings(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Callable[..., SecretStoreSettings]:
    """Settings for a fresh store (new database, new blob root) on ``backend``."""
    stores = iter(range(1_000_000))

    def storage() -> dict[str, Any]:
        if backend == "sqlite-local":
            root = tmp_path / f"store-{next(stores)}"
            return {"database_url": f"sqlite:///{root}/metadata.db", "blob_dir": root / "blobs"}
        postgres = request.getfixturevalue("postgres_server")
        s3 = request.getfixturevalue("s3_server")
        return {
            "database_url": postgres.create_schema(),
            "s3_endpoint": s3.endpoint,
            "s3_access_key": s3.access_key,
            "s3_secret_key": s3.secret_key,
            "s3_bucket": s3.shared_bucket,
            "s3_prefix": s3.new_prefix(),
        }

    def build(**overrides: Any) -> SecretStoreSettings:
        return SecretStoreSettings(**{"tokens": token_specs(), **storage(), **overrides})

    return build


@dataclass
class Api:
    """A test client of one secret-store with helpers for the common steps."""

    client: TestClient
    default_identity: str = "alice"
    created: list[str] = field(default_factory=list)

    @property
    def store(self) -> StoreContext:
        """The app's context (database and blob store) for white-box checks."""
        store: StoreContext = self.client.app.state.store  # type: ignore[attr-defined]
        return store

    def request(
        self, method: str, url: str, identity: str | None = None, **kwargs: Any
    ) -> Response:
        """A request as ``identity`` (the default identity when omitted)."""
        headers = {**auth(identity or self.default_identity), **kwargs.pop("headers", {})}
        return self.client.request(method, url, headers=headers, **kwargs)

    def create(self, identity: str | None = None, **spec: Any) -> Response:
        """POST /v1/datasets with defaults for the fields not given."""
        body = {
            "name": "views",
            "columns": [{"name": "region", "kind": "key"}, {"name": "views", "kind": "int"}],
            "rows": 4,
            **spec,
        }
        return self.request("POST", "/v1/datasets", identity, json=body)

    def upload(
        self,
        dataset_id: str,
        column: str,
        data: bytes,
        *,
        partition: int | None = None,
        identity: str | None = None,
        checksum: str | None = None,
        prefix: str = "/v1/datasets",
        **headers: str,
    ) -> Response:
        """PUT one column part with the right checksum unless told otherwise."""
        params = {} if partition is None else {"partition": partition}
        all_headers = {
            "Content-Type": "application/octet-stream",
            "Tally-Sha256": checksum if checksum is not None else sha256(data),
            **headers,
        }
        return self.request(
            "PUT",
            f"{prefix}/{dataset_id}/columns/{column}",
            identity,
            content=data,
            params=params,
            headers=all_headers,
        )

    def commit(self, dataset_id: str, identity: str | None = None) -> Response:
        """POST …/commit."""
        return self.request("POST", f"/v1/datasets/{dataset_id}/commit", identity)

    def committed(
        self, rows: int = 4, identity: str | None = None, seed: int = 0, **spec: Any
    ) -> tuple[str, dict[str, NDArray[np.uint64]]]:
        """A committed dataset with random shares: ``(id, {column: shares})``."""
        created = self.create(identity, rows=rows, **spec)
        assert created.status_code == 201, created.text
        dataset = created.json()
        columns: dict[str, NDArray[np.uint64]] = {}
        for position, column in enumerate(dataset["columns"]):
            values = random_shares(rows, seed * 1000 + position)
            columns[column["name"]] = values
            part = rows // dataset["partitions"]
            for partition in range(dataset["partitions"]):
                chunk = values[partition * part : (partition + 1) * part].tobytes()
                given = None if dataset["partitions"] == 1 else partition
                response = self.upload(
                    dataset["id"], column["name"], chunk, partition=given, identity=identity
                )
                assert response.status_code == 201, response.text
        response = self.commit(dataset["id"], identity)
        assert response.status_code == 200, response.text
        return dataset["id"], columns

    def snapshot(self) -> tuple[dict[str, int], list[str]]:
        """Row counts of every table and the sorted blob keys: 'nothing changed' checks."""
        counts = {}
        with self.store.sessions() as session:
            for table in Base.metadata.sorted_tables:
                counts[table.name] = session.scalar(select(func.count()).select_from(table)) or 0
        return counts, sorted(self.store.blobs.list(""))


@pytest.fixture
def make_api(make_settings: Callable[..., SecretStoreSettings]) -> Iterator[Callable[..., Api]]:
    """Start apps for the test (closed at the end); keyword arguments override settings."""
    clients: list[TestClient] = []

    def start(**overrides: Any) -> Api:
        client = TestClient(create_app(make_settings(**overrides)))
        client.__enter__()
        clients.append(client)
        return Api(client)

    yield start
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def api(make_api: Callable[..., Api]) -> Api:
    """A fresh secret-store on the backend under test."""
    return make_api()


def new_id() -> str:
    """A client-chosen dataset id."""
    return str(uuid.uuid4())
