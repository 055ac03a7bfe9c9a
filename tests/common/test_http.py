"""The shared HTTP pieces: JSON error bodies, body limits and request metrics."""

from __future__ import annotations

from fastapi import FastAPI, HTTPException, Request
from fastapi.testclient import TestClient
from pydantic import BaseModel

from tally.common.errors import ApiError, install_error_handlers
from tally.common.limits import BodyLimitMiddleware
from tally.common.metrics import HttpMetrics, MetricsMiddleware


class Item(BaseModel):
    name: str
    count: int


def make_app() -> tuple[FastAPI, HttpMetrics]:
    app = FastAPI()
    install_error_handlers(app)
    metrics = HttpMetrics("test")
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(
        BodyLimitMiddleware, json_limit=100, upload_limit=1000, upload_routes=[("PUT", "/blob")]
    )

    @app.post("/items/{item_id}")
    def create(item_id: int, item: Item) -> Item:
        if item.name == "taken":
            raise ApiError(409, "conflict", "name taken")
        if item.name == "plain":
            raise HTTPException(404, "no such thing")
        if item.name == "bug":
            raise RuntimeError("boom")
        return item

    @app.put("/blob")
    async def blob(request: Request) -> dict[str, int]:
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
        return {"size": size}

    return app, metrics


def client() -> TestClient:
    return TestClient(make_app()[0], raise_server_exceptions=False)


def test_errors_have_the_shared_shape() -> None:
    http = client()
    assert http.post("/items/1", json={"name": "taken", "count": 1}).json() == {
        "error": "conflict",
        "detail": "name taken",
    }
    assert http.post("/items/1", json={"name": "plain", "count": 1}).json() == {
        "error": "not_found",
        "detail": "no such thing",
    }
    invalid = http.post("/items/x", json={"name": "a", "count": "many"})
    assert invalid.status_code == 422
    body = invalid.json()
    assert body["error"] == "validation_error"
    assert "item_id" in body["detail"] and "count" in body["detail"]
    assert http.get("/nowhere").json()["error"] == "not_found"
    assert http.get("/items/1").json()["error"] == "method_not_allowed"


def test_unexpected_errors_are_a_500_without_internals() -> None:
    response = client().post("/items/1", json={"name": "bug", "count": 1})
    assert response.status_code == 500
    assert response.json()["error"] == "internal_error"
    assert "boom" not in response.text


def test_body_limits_by_route() -> None:
    http = client()
    big_json = {"name": "x" * 200, "count": 1}
    response = http.post("/items/1", json=big_json)
    assert response.status_code == 413 and response.json()["error"] == "payload_too_large"
    upload = {"Content-Type": "application/octet-stream"}
    # before, the limit followed the Content-Type: any JSON route sent as octet-stream
    # took the upload limit, unauthenticated (regression)
    disguised = http.post("/items/1", content=b"x" * 500, headers=upload)
    assert disguised.status_code == 413 and "for this route" in disguised.json()["detail"]
    chunked_json = http.post("/items/1", content=iter([b"x" * 60] * 3), headers=upload)
    assert chunked_json.status_code == 413
    assert http.put("/blob", content=b"x" * 1000, headers=upload).json() == {"size": 1000}
    assert http.put("/blob", content=b"x" * 1001, headers=upload).status_code == 413
    chunked = http.put("/blob", content=iter([b"x" * 600, b"x" * 600]), headers=upload)
    assert chunked.status_code == 413
    assert (
        http.put("/blob", content=b"1", headers={**upload, "Content-Length": "x"}).status_code
        == 400
    )


def test_metrics_use_route_templates() -> None:
    app, metrics = make_app()
    http = TestClient(app)
    http.post("/items/7", json={"name": "a", "count": 1})
    http.get("/unknown")
    text = metrics.response().body.decode()
    assert 'route="/items/{item_id}"' in text and 'status="200"' in text
    assert 'route="<unmatched>"' in text
