"""The operator's Kubernetes API calls, on the ``kubernetes_asyncio`` client library.

kopf watches and patches the resources it handles; the operator itself reads the
analyst's credentials Secret (``get`` only, never ``list`` or ``watch``), reads and
writes ConfigMaps, creates, reads and deletes worker Jobs, lists pods, reads nodes,
and patches an AnalyticsJob (its status from the monitor, one annotation before it
submits). :class:`KubeApi` makes exactly those calls, one method each, so the calls
(and the RBAC they need) are all in this file.

Why ``kubernetes_asyncio``: it is the maintained asyncio client generated from the
Kubernetes OpenAPI spec, with typed models and stubs, so the operator has no HTTP
client of its own to keep in step with the API server; it runs on aiohttp, as kopf
does, in kopf's event loop.

How it logs in: exactly as kopf does. The operator's ``@kopf.on.login`` handler
(:func:`tally_operator.handlers.startup.login`) gets a :class:`kopf.ConnectionInfo`
from kopf's own login functions (in-cluster service account, else kubeconfig) and
hands it to :meth:`KubeApi.connect`, which points a ``kubernetes_asyncio``
``ApiClient`` at ``info.server`` with kopf's ``Authorization`` header
(``info.as_http_headers()``: bearer token, another scheme, or basic auth) and kopf's
TLS context (``info.as_ssl_context()``: the CA from a path or inline data, client
certificates, ``insecure``), honouring ``info.trust_env`` and ``info.proxy_url``.
``kubernetes_asyncio`` would build its TLS context from file paths only and always
trust proxy variables, so its session is replaced by one made from kopf's context.
A later login (kopf re-authenticates on 401) replaces the client again.

Failures map to :class:`KubeNotFound` (404), :class:`KubeConflict` (409: exists, or
a stale resourceVersion), :class:`KubeInvalid` (422: the object is wrong, with the
API server's reason) and :class:`KubeUnavailable` (network, timeouts, 5xx, 401/403,
429, or not logged in yet: retry later).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, cast

import aiohttp
import kopf
from kubernetes_asyncio import client

from tally_operator.resources import ANALYTICS_JOB_PLURAL, GROUP, VERSION

MERGE_PATCH = "application/merge-patch+json"
READ_BUFFER = 2**21  # as kubernetes_asyncio: objects can be as large as etcd allows


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


def _body(manifest: Mapping[str, Any]) -> Any:
    """A manifest as a request body: the generated methods send a plain dict as it is
    (``sanitize_for_serialization``); their stubs only name the model classes."""
    return dict(manifest)


class KubeApi:
    """The operator's calls to the Kubernetes API, with the credentials of kopf's login."""

    def __init__(self, *, timeout: float = 10.0) -> None:
        self._timeout = timeout
        self._client: client.ApiClient | None = None
        self._retired: list[client.ApiClient] = []

    async def connect(self, info: kopf.ConnectionInfo) -> None:
        """Use ``info`` (from the login handler) for every following request."""
        configuration = client.Configuration(host=info.server.rstrip("/"))
        api = client.ApiClient(configuration)
        for header, value in info.as_http_headers().items():
            api.set_default_header(header, value)
        rest = api.rest_client
        await rest.pool_manager.close()  # built from file paths only; use kopf's TLS instead
        rest.pool_manager = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=info.as_ssl_context()),
            trust_env=info.trust_env,
            read_bufsize=READ_BUFFER,
        )
        if info.proxy_url:
            rest.proxy = info.proxy_url
        if self._client is not None:
            self._retired.append(self._client)
        self._client = api

    async def close(self) -> None:
        """Close the connections of this and earlier credentials."""
        clients = [*self._retired, *([self._client] if self._client else [])]
        self._retired, self._client = [], None
        for api in clients:
            await api.close()

    # --- reads ------------------------------------------------------------------

    async def read_secret(self, namespace: str, name: str) -> client.V1Secret:
        """A Secret, read with ``get`` (the operator may not list or watch Secrets)."""
        async with self._errors(f"GET secret {namespace}/{name}"):
            return await self._core.read_namespaced_secret(
                name, namespace, _request_timeout=self._timeout
            )

    async def read_config_map(self, namespace: str, name: str) -> client.V1ConfigMap:
        """A ConfigMap."""
        async with self._errors(f"GET configmap {namespace}/{name}"):
            return await self._core.read_namespaced_config_map(
                name, namespace, _request_timeout=self._timeout
            )

    async def read_job(self, namespace: str, name: str) -> client.V1Job:
        """A ``batch/v1`` Job."""
        async with self._errors(f"GET job {namespace}/{name}"):
            return await self._batch.read_namespaced_job(
                name, namespace, _request_timeout=self._timeout
            )

    async def read_node(self, name: str) -> client.V1Node:
        """A Node."""
        async with self._errors(f"GET node {name}"):
            return await self._core.read_node(name, _request_timeout=self._timeout)

    async def list_pods(self, namespace: str, *, label_selector: str) -> list[client.V1Pod]:
        """The pods in ``namespace`` that match ``label_selector``."""
        async with self._errors(f"LIST pods {namespace} ({label_selector})"):
            pods = await self._core.list_namespaced_pod(
                namespace, label_selector=label_selector, _request_timeout=self._timeout
            )
        return list(pods.items or [])

    # --- writes -----------------------------------------------------------------

    async def create_config_map(self, namespace: str, manifest: Mapping[str, Any]) -> None:
        """Create a ConfigMap (:class:`KubeConflict` if it exists)."""
        async with self._errors(f"POST configmap in {namespace}"):
            await self._core.create_namespaced_config_map(
                namespace, _body(manifest), _request_timeout=self._timeout
            )

    async def create_secret(self, namespace: str, manifest: Mapping[str, Any]) -> None:
        """Create a Secret (:class:`KubeConflict` if it exists)."""
        async with self._errors(f"POST secret in {namespace}"):
            await self._core.create_namespaced_secret(
                namespace, _body(manifest), _request_timeout=self._timeout
            )

    async def replace_config_map(
        self, namespace: str, name: str, manifest: Mapping[str, Any]
    ) -> None:
        """Replace a ConfigMap; ``metadata.resourceVersion`` makes it optimistic."""
        async with self._errors(f"PUT configmap {namespace}/{name}"):
            await self._core.replace_namespaced_config_map(
                name, namespace, _body(manifest), _request_timeout=self._timeout
            )

    async def create_job(self, namespace: str, manifest: Mapping[str, Any]) -> None:
        """Create a ``batch/v1`` Job (:class:`KubeConflict` if it exists,
        :class:`KubeInvalid` with the API server's reason if it is refused)."""
        async with self._errors(f"POST job in {namespace}"):
            await self._batch.create_namespaced_job(
                namespace, _body(manifest), _request_timeout=self._timeout
            )

    async def delete_job(self, namespace: str, name: str) -> None:
        """Delete a Job and, in the background, its pods. Absent is fine."""
        with contextlib.suppress(KubeNotFound):
            async with self._errors(f"DELETE job {namespace}/{name}"):
                await self._batch.delete_namespaced_job(
                    name,
                    namespace,
                    propagation_policy="Background",
                    _request_timeout=self._timeout,
                )

    async def patch_analytics_job(
        self, namespace: str, name: str, patch: Mapping[str, Any]
    ) -> None:
        """Merge-patch an AnalyticsJob (its metadata: the spec is immutable)."""
        async with self._errors(f"PATCH {ANALYTICS_JOB_PLURAL} {namespace}/{name}"):
            await self._merge_patch(
                self._custom.patch_namespaced_custom_object,
                *(GROUP, VERSION, namespace, ANALYTICS_JOB_PLURAL, name, _body(patch)),
            )

    async def patch_analytics_job_status(
        self, namespace: str, name: str, status: Mapping[str, Any]
    ) -> None:
        """Merge-patch the ``status`` subresource of an AnalyticsJob."""
        async with self._errors(f"PATCH {ANALYTICS_JOB_PLURAL} {namespace}/{name}/status"):
            await self._merge_patch(
                self._custom.patch_namespaced_custom_object_status,
                *(GROUP, VERSION, namespace, ANALYTICS_JOB_PLURAL, name, {"status": dict(status)}),
            )

    # --- plumbing ---------------------------------------------------------------

    async def _merge_patch(self, method: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Call a custom-object patch ``method`` with a JSON merge patch: for a dict body
        the generated methods pick ``application/json-patch+json``, which the API server
        refuses; ``_content_type`` (accepted, but absent from the stubs) sets it."""
        await method(*args, _content_type=MERGE_PATCH, _request_timeout=self._timeout)

    @property
    def _api(self) -> client.ApiClient:
        if self._client is None:
            raise KubeUnavailable("not logged in to the Kubernetes API yet")
        return self._client

    @property
    def _core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self._api)

    @property
    def _batch(self) -> client.BatchV1Api:
        return client.BatchV1Api(self._api)

    @property
    def _custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self._api)

    @contextlib.asynccontextmanager
    async def _errors(self, what: str) -> AsyncIterator[None]:
        """Map the library's and aiohttp's failures of one call to :class:`KubeError`."""
        try:
            yield
        except client.ApiException as exc:
            raise _api_error(what, exc) from exc
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise KubeUnavailable(f"{what}: {exc!r}") from exc


def _api_error(what: str, exc: client.ApiException) -> KubeError:
    message = _message(exc.body)
    if exc.status == 404:
        return KubeNotFound(f"{what}: not found")
    if exc.status == 409:
        return KubeConflict(f"{what}: {message}")
    if exc.status == 422:
        return KubeInvalid(f"the API server refused it as invalid: {message}")
    return KubeUnavailable(f"{what}: {exc.status} {message}")


def _message(body: bytes | str | None) -> str:
    """The ``message`` of a Kubernetes ``Status`` body (else its first 200 characters).

    The library decodes the body to ``str`` before raising (its stub says ``bytes``)."""
    raw: bytes | str = body or ""
    text = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
    try:
        status = json.loads(text)
    except ValueError:
        return text[:200]
    if isinstance(status, dict):
        return str(cast(dict[str, Any], status).get("message", status))[:1000]
    return text[:200]
