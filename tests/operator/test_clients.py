"""The execution-service client over httpx, against mock transports (the Kubernetes
client is tested in test_kube.py)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import httpx
import pytest

from tally_operator.execution import (
    ExecutionJobNotFound,
    ExecutionRejected,
    ExecutionUnavailable,
    HttpExecutionClient,
)

Handler = Callable[[httpx.Request], httpx.Response]
JOB = {
    "id": "sales",
    "program": "groupby",
    "spec_hash": "ab",
    "phase": "Running",
    "stage": 2,
    "stages_total": 5,
    "restarts": 1,
    "partitions": 2,
    "bytes_sent": 0,
    "rounds": 0,
    "timings": {},
    "results": {"totals": ["d0", "d1"]},
    "reason": "",
}


def execution(handler: Handler) -> HttpExecutionClient:
    return HttpExecutionClient(
        "http://execution:8000", token="tok", transport=httpx.MockTransport(handler)
    )


def test_get_parses_the_execution_services_job_view() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=JOB)

    state = asyncio.run(execution(handler).get("sales"))
    assert (state.phase, state.stage, state.stages, state.restarts) == ("Running", 2, 5, 1)
    assert state.results == {"totals": ("d0", "d1")} and state.failure_reason is None
    assert seen[0].url.path == "/v1/jobs/sales"
    assert seen[0].headers["Authorization"] == "Bearer tok"


def test_submit_carries_the_analysts_token_and_never_adopts_on_conflict() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.method == "POST":
            assert json.loads(request.content)["id"] == "sales"
            if len(seen) == 1:
                return httpx.Response(201, json=JOB)  # created
            if len(seen) == 2:
                return httpx.Response(200, json=JOB)  # the same job, same submitter
            detail = "job 'sales' exists here with another spec or submitter"
            return httpx.Response(409, json={"error": "job_conflict", "detail": detail})
        return httpx.Response(200, json=JOB)

    client = execution(handler)
    submission = asyncio.run(client.submit({"id": "sales"}, "analyst-token"))
    assert submission.created and submission.state.id == "sales"
    assert submission.state.phase == "Running"
    assert seen[0].headers["Authorization"] == "Bearer analyst-token"  # not the operator's
    # a job that existed already is reported as such, never as created (regression:
    # the operator took an earlier job of the same id for its own)
    assert not asyncio.run(client.submit({"id": "sales"}, "analyst-token")).created
    # before, a 409 was answered with whatever job had that id (regression)
    with pytest.raises(ExecutionRejected, match="another spec or submitter") as caught:
        asyncio.run(client.submit({"id": "sales"}, "analyst-token"))
    assert caught.value.status == 409
    assert [r.method for r in seen] == ["POST", "POST", "POST"]  # no GET of the other job


@pytest.mark.parametrize(
    ("response", "error"),
    [
        (httpx.Response(503, text="down"), ExecutionUnavailable),
        (httpx.Response(404, json={"error": "not_found", "detail": "no"}), ExecutionJobNotFound),
        (httpx.Response(200, json={**JOB, "phase": "Dancing"}), ExecutionUnavailable),
    ],
)
def test_get_failures(response: httpx.Response, error: type[Exception]) -> None:
    with pytest.raises(error):
        asyncio.run(execution(lambda _: response).get("sales"))


def test_rejections_carry_the_services_error() -> None:
    response = httpx.Response(422, json={"error": "invalid_job", "detail": "unknown program"})
    with pytest.raises(ExecutionRejected, match="unknown program") as caught:
        asyncio.run(execution(lambda _: response).submit({"id": "x"}, "t"))
    assert caught.value.code == "invalid_job"


def test_network_errors_are_unavailable_and_cancel_tolerates_unknown_jobs() -> None:
    def broken(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(ExecutionUnavailable):
        asyncio.run(execution(broken).cancel("x"))
    asyncio.run(execution(lambda _: httpx.Response(404)).cancel("x"))
    asyncio.run(execution(lambda _: httpx.Response(200, json=JOB)).cancel("x"))
