"""HTTP to the parties: one ``httpx`` client per party and service, errors made specific.

Every call names the party and the service in its error: a refused request becomes
:class:`PartyRequestError` (with the service's ``{"error", "detail"}``), a missing
dataset :class:`UnknownDatasetError`, a connection failure
:class:`PartyUnreachableError`.  :func:`at_every_party` runs one call per party in
parallel threads and re-raises the first failure after all calls have ended.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import httpx
import numpy as np
from numpy.typing import NDArray

from tally.client.config import PartyEndpoint
from tally.client.errors import (
    PartyRequestError,
    PartyUnreachableError,
    TallyError,
    UnknownDatasetError,
)

T = TypeVar("T")

CHECKSUM_HEADER = "Tally-Sha256"
TIMEOUT = httpx.Timeout(120.0, connect=5.0)


class ServiceClient:
    """One party's service (``secret-store`` or ``execution``) over REST."""

    def __init__(self, party: PartyEndpoint, service: str, base_url: str) -> None:
        self.party = party
        self.service = service
        self.base_url = base_url
        self._http = httpx.Client(
            base_url=base_url,
            headers={"Authorization": f"Bearer {party.token}"},
            timeout=TIMEOUT,
            verify=party.verify if base_url.startswith("https://") else True,
            trust_env=False,
        )

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def request(self, method: str, path: str, *, allow: Sequence[int] = (), **kwargs: Any) -> Any:
        """Send a request; the decoded JSON (or bytes for octet streams), else a specific error."""
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as error:
            raise PartyUnreachableError(
                f"party {self.party.index} ({self.service} at {self.base_url}) is unreachable: "
                f"{_reason(error)}. Is the deployment up? Try `tally local status`."
            ) from None
        if response.status_code >= 400 and response.status_code not in allow:
            raise self._error(response, path)
        if response.status_code == 204 or not response.content:
            return None
        if response.headers.get("content-type", "").startswith("application/json"):
            return response.json()
        return response.content

    def _error(self, response: httpx.Response, path: str) -> TallyError:
        try:
            body = response.json()
            code, detail = str(body.get("error", "")), str(body.get("detail", ""))
        except ValueError:
            code, detail = "", response.text[:300]
        code = code or f"http_{response.status_code}"
        if response.status_code == 401:
            return PartyRequestError(
                self.party.index,
                401,
                code,
                f"{detail}; check the token of this identity in the client configuration",
            )
        if response.status_code == 404 and (
            code == "unknown_dataset" or (code == "not_found" and "/datasets/" in path)
        ):
            return UnknownDatasetError(
                f"party {self.party.index}: {detail}; `tally datasets` lists the datasets you "
                "may use"
            )
        return PartyRequestError(self.party.index, response.status_code, code, detail)

    def put_octets(
        self, path: str, values: NDArray[np.uint64], params: dict[str, Any] | None = None
    ) -> Any:
        """Upload uint64 values as little-endian bytes with their SHA-256 header."""
        body = np.ascontiguousarray(values, dtype="<u8").tobytes()
        headers = {
            "Content-Type": "application/octet-stream",
            CHECKSUM_HEADER: hashlib.sha256(body).hexdigest(),
        }
        return self.request("PUT", path, content=body, headers=headers, params=params)

    def get_octets(self, path: str) -> NDArray[np.uint64]:
        """Download little-endian uint64 values."""
        data = self.request("GET", path)
        return np.frombuffer(bytes(data or b""), dtype="<u8").astype(np.uint64)


def _reason(error: httpx.TransportError) -> str:
    if isinstance(error, httpx.ConnectError):
        return "connection refused"
    if isinstance(error, httpx.TimeoutException):
        return "timed out"
    return type(error).__name__


def at_every_party(calls: Sequence[Callable[[], T]]) -> list[T]:
    """Run one call per party in parallel; results in party order, or the first error."""
    if len(calls) == 1:
        return [calls[0]()]
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        futures = [pool.submit(call) for call in calls]
        errors = [future.exception() for future in futures]
    for error in errors:
        if error is not None:
            raise error
    return [future.result() for future in futures]


def settle_at_every_party(calls: Sequence[Callable[[], T]]) -> list[T | BaseException]:
    """Like :func:`at_every_party` but returns each party's result or exception."""
    with ThreadPoolExecutor(max_workers=max(len(calls), 1)) as pool:
        futures = [pool.submit(call) for call in calls]
        out: list[T | BaseException] = []
        for future in futures:
            error = future.exception()
            out.append(error if error is not None else future.result())
    return out
