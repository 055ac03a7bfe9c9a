"""The REST API needs a bearer token (except probes and metrics); errors are JSON."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tally.common.blobstore import LocalBlobStore
from tally.common.db import make_engine
from tally.mpc.offline.wire import encode_shuffle, encode_shuffle_parts
from tally.mpc.reserved import HttpTupleReader, TupleServiceError
from tally.mpc.tuples import Dealer
from tally.tuples.app import create_app
from tally.tuples.node import TupleNode
from tally.tuples.settings import TuplesSettings
from tally.tuples.store import (
    SHUFFLE,
    ChunkStore,
    ReservationError,
    ReservationSpec,
    TupleReuse,
    migrate,
)
from tests.tuples.cluster import Cluster

TOKEN = "operator-token-for-the-tuple-service-tests"


@pytest.fixture
def node(tmp_path: Path) -> Iterator[TupleNode]:
    url = f"sqlite:///{tmp_path / 'index.db'}"
    settings = TuplesSettings(
        party=1,
        peers=["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"],
        database_url=url,
        tokens=[{"identity": "operator", "token": TOKEN}],  # type: ignore[list-item]
    )
    migrate(url)
    node = TupleNode(settings, ChunkStore(make_engine(url), LocalBlobStore(tmp_path)), {})
    node.ready.set()
    yield node
    node.stop()


@pytest.fixture
def client(node: TupleNode) -> Iterator[TestClient]:
    with TestClient(create_app(node)) as test_client:
        yield test_client


PROTECTED = [
    "/v1/pools",
    "/v1/link",
    "/v1/reservations",
    "/v1/reservations/" + "a" * 32,
    "/v1/reservations/" + "a" * 32 + "/tuples/triples?offset=0&count=1",
    "/v1/reservations/" + "a" * 32 + "/shuffles/0?rows=1&kinds=a",
]


@pytest.mark.parametrize("path", PROTECTED)
def test_protected_routes_refuse_a_missing_or_wrong_token(client: TestClient, path: str) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
        response = client.get(path, headers=headers)
        assert response.status_code == 401, (path, headers)
        assert response.json()["error"] == "unauthorized"
        assert response.json()["detail"]
        assert response.headers["WWW-Authenticate"] == "Bearer"
    reply = client.post("/v1/reservations", json={"job_id": "j", "tuples": {"triples": 1}})
    assert reply.status_code == 401


def test_a_valid_token_is_let_through(client: TestClient) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    assert client.get("/v1/pools", headers=headers).status_code == 200
    missing = client.get("/v1/reservations/" + "a" * 32, headers=headers)
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"


def test_probes_and_metrics_stay_open(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}
    metrics = client.get("/metrics")
    assert metrics.status_code == 200 and "tally_http_requests_total" in metrics.text


def test_the_engines_reader_sends_its_token(dealt: Cluster) -> None:
    url = dealt.url(1)
    with pytest.raises(TupleServiceError, match="401"):
        HttpTupleReader(url, "a" * 32, token="not-the-token").read("triples", 0, 1)
    with pytest.raises(TupleServiceError, match="no reservation"):  # authenticated: got further
        HttpTupleReader(url, "a" * 32, token=dealt.token(1)).read("triples", 0, 1)


RESERVATION = "b" * 32
SHUFFLE_PATH = f"/v1/reservations/{RESERVATION}/shuffles/0?rows=11&kinds=ax"
AUTHORIZED = {"Authorization": f"Bearer {TOKEN}"}


def active_reservation(node: TupleNode, monkeypatch: pytest.MonkeyPatch, state: str) -> None:
    spec = ReservationSpec({SHUFFLE: (1, [])})
    found = ("job", state, "session", spec)
    monkeypatch.setattr(node.store, "reservation", lambda reservation_id: found)


def test_a_shuffle_is_streamed_with_its_length(
    node: TupleNode, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    correlation = Dealer(3, seed=5).source(1).shuffle(11, "ax")
    active_reservation(node, monkeypatch, "active")
    monkeypatch.setattr(node, "shuffle", lambda *args: encode_shuffle_parts(correlation))
    response = client.get(SHUFFLE_PATH, headers=AUTHORIZED)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/octet-stream"
    assert int(response.headers["content-length"]) == len(response.content)
    assert response.content == encode_shuffle(correlation)


@pytest.mark.parametrize(
    ("error", "code"),
    [(TupleReuse("served already"), "tuples_reused"), (ReservationError("gone"), "conflict")],
)
def test_a_refused_shuffle_is_a_json_409_before_any_bytes(
    node: TupleNode,
    client: TestClient,
    monkeypatch: pytest.MonkeyPatch,
    error: Exception,
    code: str,
) -> None:
    active_reservation(node, monkeypatch, "active")

    def refuse(*args: object) -> None:
        raise error

    monkeypatch.setattr(node, "shuffle", refuse)
    response = client.get(SHUFFLE_PATH, headers=AUTHORIZED)
    assert response.status_code == 409
    assert response.json()["error"] == code


def test_a_shuffle_of_a_missing_or_inactive_reservation_is_refused(
    node: TupleNode, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = client.get(SHUFFLE_PATH, headers=AUTHORIZED)
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    active_reservation(node, monkeypatch, "released")
    released = client.get(SHUFFLE_PATH, headers=AUTHORIZED)
    assert released.status_code == 409 and released.json()["error"] == "conflict"


def job_token(client: TestClient, job_id: str, ttl_s: float = 3600.0) -> str:
    issued = client.post(
        "/v1/job-tokens", json={"job_id": job_id, "ttl_s": ttl_s}, headers=AUTHORIZED
    )
    assert issued.status_code == 201, issued.text
    token = issued.json()["token"]
    assert token.startswith("tjob_") and token != TOKEN
    return str(token)


def test_a_job_token_reaches_its_own_jobs_reservations_only(
    node: TupleNode, client: TestClient
) -> None:
    """Regression (issue 14): every worker held the party's tuple-service credential,
    which streams any job's tuple shares and generates at will."""
    spec = ReservationSpec({SHUFFLE: (1, [])})
    node.store.accept("c" * 32, "job-a", "session", spec)
    node.store.accept("d" * 32, "job-b", "session", spec)
    headers = {"Authorization": f"Bearer {job_token(client, 'job-a')}"}

    own = client.get("/v1/reservations/" + "c" * 32, headers=headers)
    assert own.status_code == 200 and own.json()["job_id"] == "job-a"
    # its own reservation holds no triples: refused by the store, not by the scope
    reply = client.get(
        f"/v1/reservations/{'c' * 32}/tuples/triples?offset=0&count=1", headers=headers
    )
    assert reply.status_code == 409 and reply.json()["error"] == "conflict"

    other = [
        client.get("/v1/reservations/" + "d" * 32, headers=headers),
        client.get(f"/v1/reservations/{'d' * 32}/tuples/triples?offset=0&count=1", headers=headers),
        client.get(f"/v1/reservations/{'d' * 32}/shuffles/0?rows=4&kinds=a", headers=headers),
        client.post(
            "/v1/reservations", json={"job_id": "job-b", "tuples": {"triples": 1}}, headers=headers
        ),
        client.get("/v1/pools", headers=headers),
        client.get("/v1/link", headers=headers),
        client.get("/v1/reservations?state=active", headers=headers),
        client.post(f"/v1/reservations/{'c' * 32}/release", headers=headers),
        client.post("/v1/pools/triples/generate", json={"tuples": 10}, headers=headers),
        client.post("/v1/job-tokens", json={"job_id": "job-a", "ttl_s": 60}, headers=headers),
        client.delete("/v1/job-tokens/job-b", headers=headers),
    ]
    for response in other:
        assert response.status_code == 403, (response.request.url, response.text)
        assert response.json()["error"] == "out_of_scope"
    # nothing was released or revoked by the refused calls
    assert node.store.reservation("c" * 32) is not None
    assert node.store.reservation("c" * 32)[1] == "active"  # type: ignore[index]
    assert client.get("/v1/reservations/" + "c" * 32, headers=headers).status_code == 200


def test_a_job_token_ends_with_its_job_and_its_ttl(node: TupleNode, client: TestClient) -> None:
    node.store.accept("e" * 32, "job-c", "session", ReservationSpec({SHUFFLE: (1, [])}))
    token = job_token(client, "job-c")
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/v1/reservations/" + "e" * 32, headers=headers).status_code == 200
    revoked = client.delete("/v1/job-tokens/job-c", headers=AUTHORIZED)
    assert revoked.status_code == 200 and revoked.json() == {"revoked": 1}
    after = client.get("/v1/reservations/" + "e" * 32, headers=headers)
    assert after.status_code == 401 and "revoked" in after.json()["detail"]

    short = {"Authorization": f"Bearer {job_token(client, 'job-c', ttl_s=0.05)}"}
    time.sleep(0.1)
    expired = client.get("/v1/reservations/" + "e" * 32, headers=short)
    assert expired.status_code == 401 and "expired" in expired.json()["detail"]
    forged = client.get("/v1/reservations/" + "e" * 32, headers={"Authorization": "Bearer tjob_x"})
    assert forged.status_code == 401
    # only the digest is stored: the token appears nowhere in the index
    with node.store.engine.connect() as connection:
        rows = connection.exec_driver_sql("SELECT * FROM tuple_job_tokens").fetchall()
    assert rows and all(token not in map(str, row) for row in rows)


def test_a_monitoring_token_issues_no_job_tokens(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'index.db'}"
    settings = TuplesSettings(
        party=1,
        peers=["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"],
        database_url=url,
        tokens=[  # type: ignore[list-item]
            {"identity": "grafana", "token": "m" * 40, "scopes": ["monitoring"]},
            {"identity": "admin", "token": "a" * 40, "roles": ["party-admin"]},
        ],
    )
    migrate(url)
    node = TupleNode(settings, ChunkStore(make_engine(url), LocalBlobStore(tmp_path)), {})
    try:
        with TestClient(create_app(node)) as client:
            for token in ("m" * 40, "a" * 40):
                reply = client.post(
                    "/v1/job-tokens",
                    json={"job_id": "j", "ttl_s": 60},
                    headers={"Authorization": f"Bearer {token}"},
                )
                assert reply.status_code == 403, reply.text
    finally:
        node.stop()
