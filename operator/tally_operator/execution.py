"""A small typed client of this party's execution service REST API.

The contract (owned by the execution service):

- ``POST /v1/jobs`` with the job (id, program, inputs, params, outputs, partitions,
  dp), with the analyst's own token, creates it (``201``); the same job again (same
  spec, same submitter) is ``200``, which :class:`Submission` reports as
  ``created=False``; ``409`` if a job with that id exists with another spec or another
  submitter (never adopted: that job is someone else's);
- ``GET /v1/jobs/{id}`` reports its phase (Pending, Reserving, Running, Succeeded,
  Failed, Cancelled), ``stage`` of ``stages_total``, ``restarts``, the failure
  ``reason`` and ``results`` (result dataset ids per output);
- ``DELETE /v1/jobs/{id}`` cancels it and releases its tuple reservation.

Status and cancel requests carry the operator's token (the party's service
credential); a submission carries only the analyst's. Errors are 4xx with
``{"error": code, "detail": text}``. The handlers see three failures:
:class:`ExecutionUnavailable` (network, timeouts, 5xx: retry later),
:class:`ExecutionJobNotFound`, and :class:`ExecutionRejected` (any other 4xx: the
request itself is wrong and retrying will not help). Tests replace the client with a
fake that implements :class:`ExecutionClient`.
"""

from __future__ import annotations

import dataclasses
import ssl
from collections.abc import Mapping
from typing import Any, Protocol

import httpx

EXECUTION_PHASES = ("Pending", "Reserving", "Running", "Succeeded", "Failed", "Cancelled")


class ExecutionError(Exception):
    """Base of the execution client's errors."""


class ExecutionUnavailable(ExecutionError):
    """The service could not be reached or failed on its side; retry later."""


class ExecutionJobNotFound(ExecutionError):
    """The service knows no job with this id."""


class ExecutionRejected(ExecutionError):
    """The service refused the request (4xx); ``code`` is its error code."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        self.status, self.code, self.detail = status, code, detail
        super().__init__(f"execution service refused the request ({status} {code}): {detail}")


@dataclasses.dataclass(frozen=True)
class ExecutionJobState:
    """What the execution service reports about one job."""

    id: str
    phase: str
    stage: int = 0
    stages: int = 0
    restarts: int = 0
    failure_reason: str | None = None
    results: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> ExecutionJobState:
        """Parse a ``GET /v1/jobs/{id}`` body; unknown fields are ignored."""
        phase = payload.get("phase")
        if phase not in EXECUTION_PHASES:
            raise ExecutionUnavailable(f"execution service reported an unknown phase {phase!r}")
        results = payload.get("results")
        return cls(
            id=str(payload.get("id", "")),
            phase=str(phase),
            stage=_int(payload.get("stage")),
            stages=_int(payload.get("stages_total")),
            restarts=_int(payload.get("restarts")),
            failure_reason=str(payload.get("reason") or "") or None,
            results={
                str(output): tuple(str(d) for d in datasets)
                for output, datasets in (results.items() if isinstance(results, Mapping) else ())
                if isinstance(datasets, list)
            },
        )


@dataclasses.dataclass(frozen=True)
class Submission:
    """The answer to a submission: the job's state, and whether this request created it
    (``False``: a job of that id, spec and submitter existed already)."""

    state: ExecutionJobState
    created: bool


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    return str(body.get("detail", "")) if isinstance(body, dict) else response.text[:200]


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


class ExecutionClient(Protocol):
    """What the operator needs from the execution service."""

    async def submit(self, job: Mapping[str, Any], token: str) -> Submission:
        """Create the job as the identity of ``token``, or find the same job submitted by
        the same identity (``created=False``); ``ExecutionRejected`` (409) for any other."""
        ...

    async def get(self, job_id: str, token: str | None = None) -> ExecutionJobState:
        """The job's current state; with ``token``, the job of that name of its identity
        (job ids are scoped by submitter), else by the operator's credential."""
        ...

    async def cancel(self, job_id: str) -> None:
        """Cancel the job and release its reservation; a no-op for an unknown job."""
        ...

    async def worker_token(self, job_id: str) -> str:
        """A credential for the job's pods only (they attach and report that job)."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


class HttpExecutionClient:
    """:class:`ExecutionClient` over the REST API with httpx."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        ca: str | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.AsyncClient(
            base_url=base_url,
            headers=headers,
            timeout=timeout,
            transport=transport,
            verify=ssl.create_default_context(cafile=ca),
            trust_env=False,
        )

    async def submit(self, job: Mapping[str, Any], token: str) -> Submission:
        response = await self._request(
            "POST", "/v1/jobs", json=dict(job), headers={"Authorization": f"Bearer {token}"}
        )
        if response.status_code == httpx.codes.CONFLICT:
            raise ExecutionRejected(409, "job_conflict", _detail(response))
        state = ExecutionJobState.from_payload(self._json(response))
        return Submission(state=state, created=response.status_code == httpx.codes.CREATED)

    async def get(self, job_id: str, token: str | None = None) -> ExecutionJobState:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = await self._request("GET", f"/v1/jobs/{job_id}", headers=headers)
        if response.status_code == httpx.codes.NOT_FOUND:
            raise ExecutionJobNotFound(f"the execution service has no job {job_id!r}")
        return ExecutionJobState.from_payload(self._json(response))

    async def cancel(self, job_id: str) -> None:
        response = await self._request("DELETE", f"/v1/jobs/{job_id}")
        if response.status_code in (httpx.codes.NOT_FOUND, httpx.codes.CONFLICT):
            return  # unknown, or already finished: nothing left to cancel
        self._json(response)

    async def worker_token(self, job_id: str) -> str:
        response = await self._request("POST", f"/v1/internal/jobs/{job_id}/worker-token")
        if response.status_code == httpx.codes.NOT_FOUND:
            raise ExecutionJobNotFound(f"the execution service has no job {job_id!r}")
        return str(self._json(response)["token"])

    async def close(self) -> None:
        await self._client.aclose()

    async def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._client.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            raise ExecutionUnavailable(f"execution service unreachable: {exc!r}") from exc
        if response.status_code >= 500:
            raise ExecutionUnavailable(
                f"execution service failed with {response.status_code} on {method} {url}"
            )
        return response

    @staticmethod
    def _json(response: httpx.Response) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            body = {}
        if response.status_code in (httpx.codes.NOT_FOUND, httpx.codes.CONFLICT):
            return body if isinstance(body, dict) else {}
        if response.status_code >= 400:
            body = body if isinstance(body, dict) else {}
            raise ExecutionRejected(
                response.status_code,
                str(body.get("error", "error")),
                str(body.get("detail", response.text[:200])),
            )
        if not isinstance(body, dict):
            raise ExecutionUnavailable("execution service answered with a non-object body")
        return body
