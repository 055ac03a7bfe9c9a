"""The REST API needs a bearer token (except probes and metrics); errors are JSON."""

from __future__ import annotations

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
