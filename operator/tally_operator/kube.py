"""A minimal async Kubernetes API client for the calls kopf does not make for us.

kopf watches and patches the resources it handles; the operator itself creates and
deletes worker Jobs, writes ConfigMaps, lists pods, reads nodes and patches the
status of an AnalyticsJob from its monitor. This client does those few calls with
httpx, using the credentials kopf's login produced (:class:`kopf.ConnectionInfo`:
in-cluster service account or kubeconfig), so both talk to the same API server as
the same identity.

Failures map to :class:`KubeNotFound`, :class:`KubeConflict` (409),
:class:`KubeInvalid` (422: the object is wrong) and :class:`KubeUnavailable`
(network, 5xx, 401/403, 429: retry later).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from typing import Any

import httpx
import kopf


class KubeError(Exception):
    """Base of the Kubernetes client's errors."""


class KubeNotFound(KubeError):
    """404: the object does not exist."""


class KubeConflict(KubeError):
    """409: the object exists already, or a precondition (resourceVersion) failed."""


class KubeInvalid(KubeError):
    """422: the API server refused the object itself; retrying the same one cannot help."""


class KubeUnavailable(KubeError):
    """The API server could not be reached, refused our credentials, or failed."""


def path_of(
    api_version: str,
    plural: str,
    *,
    namespace: str | None = None,
    name: str | None = None,
    subresource: str | None = None,
) -> str:
    """The REST path of a collection or object, e.g. ``/apis/batch/v1/namespaces/ns/jobs/x``."""
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    parts = [base]
    if namespace is not None:
        parts.append(f"namespaces/{namespace}")
    parts.append(plural)
    if name is not None:
        parts.append(name)
    if subresource is not None:
        parts.append(subresource)
    return "/".join(parts)


class KubeApi:
    """Async calls to the Kubernetes API with the operator's credentials."""

    def __init__(
        self, *, timeout: float = 10.0, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self._timeout = timeout
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._retired: list[httpx.AsyncClient] = []

    def connect(self, info: kopf.ConnectionInfo) -> None:
        """Use ``info`` (from the login handler) for every following request."""
        verify: Any = True
        if info.server.startswith("https://"):
            verify = info.as_ssl_context()
        old = self._client
        self._client = httpx.AsyncClient(
            base_url=info.server,
            headers={**info.as_http_headers(), "Accept": "application/json"},
            verify=verify,
            timeout=self._timeout,
            transport=self._transport,
            trust_env=info.trust_env,
        )
        if old is not None:
            self._retired.append(old)

    async def close(self) -> None:
        """Close the connections of this and earlier credentials."""
        clients = [*self._retired, *([self._client] if self._client else [])]
        self._retired = []
        self._client = None
        for client in clients:
            await client.aclose()

    async def get(self, path: str, *, params: Mapping[str, str] | None = None) -> dict[str, Any]:
        """GET an object or a list."""
        return await self._call("GET", path, params=params)

    async def create(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST a new object into the collection at ``path``."""
        return await self._call("POST", path, json=dict(body))

    async def replace(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """PUT an object (needs ``metadata.resourceVersion`` for optimistic locking)."""
        return await self._call("PUT", path, json=dict(body))

    async def merge_patch(self, path: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        """PATCH with a JSON merge patch (RFC 7386)."""
        return await self._call(
            "PATCH", path, json=dict(patch), content_type="application/merge-patch+json"
        )

    async def delete(self, path: str, *, propagation: str = "Background") -> None:
        """DELETE an object; its dependents go by ``propagation``. Absent is fine."""
        try:
            await self._call(
                "DELETE",
                path,
                json={
                    "apiVersion": "v1",
                    "kind": "DeleteOptions",
                    "propagationPolicy": propagation,
                },
            )
        except KubeNotFound:
            return

    async def list_items(
        self, path: str, *, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        """The items of a list call, optionally filtered by a label selector."""
        params = {"labelSelector": label_selector} if label_selector else None
        listing = await self.get(path, params=params)
        items = listing.get("items") or []
        return [item for item in items if isinstance(item, dict)]

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        if self._client is None:
            raise KubeUnavailable("not logged in to the Kubernetes API yet")
        url = path if not params else f"{path}?{urllib.parse.urlencode(params)}"
        headers = {"Content-Type": content_type} if json is not None else {}
        try:
            response = await self._client.request(method, url, json=json, headers=headers)
        except httpx.HTTPError as exc:
            raise KubeUnavailable(f"{method} {path}: {exc!r}") from exc
        if response.status_code == 404:
            raise KubeNotFound(f"{method} {path}: not found")
        if response.status_code == 409:
            raise KubeConflict(f"{method} {path}: {_message(response)}")
        if response.status_code == 422:
            raise KubeInvalid(f"the API server refused it as invalid: {_message(response)}")
        if response.status_code >= 400:
            raise KubeUnavailable(f"{method} {path}: {response.status_code} {_message(response)}")
        try:
            body = response.json()
        except ValueError:
            return {}
        return body if isinstance(body, dict) else {}


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    return str(body.get("message", body)) if isinstance(body, dict) else str(body)[:200]
