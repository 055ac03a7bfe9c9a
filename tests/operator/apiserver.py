"""A Kubernetes API server for kopf, built on kmock's emulator.

kmock's ``KubernetesEmulator`` keeps objects in memory and serves discovery, but kopf
expects more of an API server than it does. :class:`ApiServer` adds:

- ``metadata.uid``, ``resourceVersion`` (one global counter), ``creationTimestamp``
  and the namespace from the URL on every stored object;
- ``kind``/``apiVersion``/``metadata.resourceVersion`` on lists, and label selectors;
- watches that honour ``resourceVersion`` (replaying the changes after it from a log,
  so nothing between kopf's list and its watch is lost) and end when the client goes;
- JSON merge patches, JSON patches with ``422`` when a ``test`` op fails, and ``PUT``
  with a resourceVersion precondition (``409`` when stale);
- the ``status`` subresource: writes to it change only ``.status``, writes to the
  object never do;
- deletion with finalizers (``deletionTimestamp``, then removal once the finalizers
  are gone) and background garbage collection of owned objects;
- the checks a real API server makes that a client library can get wrong: with
  ``authorization`` set, a request without that ``Authorization`` header is ``401``;
  a patch must say what it is (``application/merge-patch+json`` for an object body,
  ``application/json-patch+json`` for a list; strategic merge only for built-in
  kinds), else ``400`` or ``415``;
- injected failures: creating a resource in ``invalid`` is refused with ``422``
  (admission), in ``unavailable`` with ``503``.

Everything else (the request log, ``objects`` for assertions, discovery from
``resources``) is kmock's. Tests and the simulated Job controller change objects
in-process through :meth:`create`, :meth:`patch` and :meth:`delete`, which go through
the same code (and the same watch log) as HTTP requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime
import json
import uuid
from collections.abc import Mapping
from typing import Any

import aiohttp.web
import jsonpatch
import kmock
from kmock._internal import dicts as kmock_dicts

WATCH_POLL = 0.2  # seconds between checks that a watch's client is still there


class ApiError(kmock.KubernetesError):
    """An API error with the status code and reason Kubernetes would send."""


def _not_found(what: str) -> ApiError:
    return ApiError(status=404, reason="NotFound", message=f"{what} not found")


class ApiServer(kmock.KubernetesEmulator):  # type: ignore[misc]
    """kmock's emulator with the API-server behaviour kopf relies on (module docstring)."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self._revision = 0
        self._log: list[tuple[int, kmock.resource, dict[str, Any]]] = []
        self._changed = asyncio.Event()
        self._closing = False
        self.invalid: dict[str, str] = {}
        """plural -> message: creating one is refused with 422 Invalid (admission)."""
        self.unavailable: dict[str, str] = {}
        """plural -> message: creating one fails with 503 (etcd or a webhook is down)."""
        self.authorization: str | None = None
        """The ``Authorization`` header every HTTP request must carry (None: any)."""
        self.seen: list[tuple[str, str, str | None]] = []
        """(method, path, Authorization header) of every HTTP request."""

    # --- in-process API (tests, the simulated Job controller) -------------------

    async def create(self, resource: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Create an object as ``POST`` would; ``resource`` is ``group/version/plural``."""
        res = kmock.resource(resource)
        namespace = body.get("metadata", {}).get("namespace")
        return self._create(res, namespace, copy.deepcopy(dict(body)))

    async def patch(
        self, resource: str, namespace: str | None, name: str, patch: Any, *, status: bool = False
    ) -> dict[str, Any]:
        """Merge-patch (dict) or JSON-patch (list) an object or its status."""
        res = kmock.resource(resource)
        return self._update(res, namespace, name, patch, subresource="status" if status else None)

    async def delete(self, resource: str, namespace: str | None, name: str) -> None:
        """Delete an object as ``DELETE`` would (finalizers respected)."""
        self._delete(kmock.resource(resource), namespace, name)

    def get(self, resource: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        """The stored object, or None."""
        return self._stored(kmock.resource(resource), namespace, name)

    def list(self, resource: str, namespace: str | None = None) -> list[dict[str, Any]]:
        """All stored objects of a resource (in a namespace)."""
        res = kmock.resource(resource)
        return [
            copy.deepcopy(obj.raw)
            for (r, ns, _), obj in self.objects.items()
            if r == res and not obj.deleted and (namespace is None or ns == namespace)
        ]

    def stop_watches(self) -> None:
        """End every open watch (call before stopping the server)."""
        self._closing = True
        self._notify()

    # --- HTTP ---------------------------------------------------------------------

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        given = _header(request, "Authorization")
        self.seen.append((str(request.method.value).upper(), request.url.path, given))
        if self.authorization is not None and given != self.authorization:
            return await self._render_error(
                ApiError(status=401, reason="Unauthorized", message="Unauthorized")
            )
        res = request.resource
        if res is None or res.plural is None:
            return await super()._handle(request)  # discovery and non-k8s paths
        if res not in self.resources:
            return await self._render_error(kmock.KubernetesResourceNotFoundError())
        try:
            if request.action == kmock.action.WATCH:
                return await self._watch_response(request)
            status, payload = self._serve(request)
        except kmock.KubernetesError as exc:
            return await self._render_error(exc)
        return aiohttp.web.json_response(payload, status=status)

    def _serve(self, request: kmock.Request) -> tuple[int, dict[str, Any]]:
        res, namespace, name = request.resource, request.namespace, request.name
        method = str(request.method.value).upper()
        if name is None and method == "GET":
            return 200, self._list(res, namespace, request.params)
        if name is None and method == "POST":
            if res.plural in self.invalid:
                raise ApiError(status=422, reason="Invalid", message=self.invalid[res.plural])
            if res.plural in self.unavailable:
                message = self.unavailable[res.plural]
                raise ApiError(status=503, reason="ServiceUnavailable", message=message)
            return 201, self._create(res, namespace, dict(request.data or {}))
        if name is not None and method == "GET":
            obj = self._stored(res, namespace, name)
            if obj is None:
                raise _not_found(f"{res.plural} {name!r}")
            return 200, obj
        if name is not None and method == "PATCH":
            patch = request.data if request.data is not None else {}
            _check_patch_type(res, _header(request, "Content-Type"), patch)
            return 200, self._update(res, namespace, name, patch, request.subresource)
        if name is not None and method == "PUT":
            return 200, self._replace(res, namespace, name, dict(request.data or {}))
        if name is not None and method == "DELETE":
            return 200, self._delete(res, namespace, name)
        raise ApiError(status=405, reason="MethodNotAllowed", message=f"{method} {request.url}")

    # --- the store ------------------------------------------------------------------

    def _stored(
        self, res: kmock.resource, namespace: str | None, name: str
    ) -> dict[str, Any] | None:
        key = (res, namespace, name)
        if key not in self.objects or self.objects[key].deleted:
            return None
        return copy.deepcopy(self.objects[key].raw)

    def _has_status_subresource(self, res: kmock.resource) -> bool:
        return "status" in self.resources[res].subresources

    def _next_revision(self) -> str:
        self._revision += 1
        return str(self._revision)

    def _record(self, res: kmock.resource, kind: str, obj: Mapping[str, Any]) -> None:
        revision = int(obj.get("metadata", {}).get("resourceVersion", self._revision))
        self._log.append((revision, res, {"type": kind, "object": copy.deepcopy(dict(obj))}))
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _create(
        self, res: kmock.resource, namespace: str | None, body: dict[str, Any]
    ) -> dict[str, Any]:
        metadata = body.setdefault("metadata", {})
        namespace = namespace or metadata.get("namespace")
        name = metadata.get("name")
        if not name and metadata.get("generateName"):
            name = metadata["generateName"] + uuid.uuid4().hex[:5]
        if not name:
            raise ApiError(status=422, reason="Invalid", message="metadata.name is required")
        if self._stored(res, namespace, name) is not None:
            raise ApiError(status=409, reason="AlreadyExists", message=f"{name!r} already exists")
        info = self.resources[res]
        body.setdefault("apiVersion", f"{res.group}/{res.version}" if res.group else res.version)
        if info.kind:
            body.setdefault("kind", info.kind)
        metadata.update(
            name=name,
            uid=str(uuid.uuid4()),
            resourceVersion=self._next_revision(),
            creationTimestamp=_now(),
            generation=1,
        )
        if info.namespaced:
            metadata["namespace"] = namespace
        if self._has_status_subresource(res) and res.plural != "pods":
            body.pop("status", None)
        key = (res, namespace if info.namespaced else None, name)
        if key in self.objects:
            self.objects[key].create(body)
        else:
            self.objects[key] = body
        self._record(res, "ADDED", body)
        return copy.deepcopy(body)

    def _update(
        self,
        res: kmock.resource,
        namespace: str | None,
        name: str,
        patch: Any,
        subresource: str | None,
    ) -> dict[str, Any]:
        old = self._stored(res, namespace, name)
        if old is None:
            raise _not_found(f"{res.plural} {name!r}")
        if isinstance(patch, list):
            try:
                new = jsonpatch.apply_patch(old, patch, in_place=False)
            except jsonpatch.JsonPatchTestFailed as exc:
                raise ApiError(status=422, reason="Invalid", message=f"test failed: {exc}") from exc
            except jsonpatch.JsonPatchException as exc:
                raise ApiError(status=422, reason="Invalid", message=str(exc)) from exc
        elif isinstance(patch, Mapping):
            patch = dict(patch)
            patch.get("metadata", {}).pop("resourceVersion", None)
            new = dict(kmock_dicts.merge_patch_dict(old, patch))
        else:
            raise ApiError(status=400, reason="BadRequest", message="unsupported patch body")
        return self._store_update(res, namespace, name, old, new, subresource)

    def _replace(
        self, res: kmock.resource, namespace: str | None, name: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        old = self._stored(res, namespace, name)
        if old is None:
            raise _not_found(f"{res.plural} {name!r}")
        expected = body.get("metadata", {}).get("resourceVersion")
        if expected is not None and expected != old["metadata"]["resourceVersion"]:
            raise ApiError(status=409, reason="Conflict", message="the object has been modified")
        return self._store_update(res, namespace, name, old, body, None)

    def _store_update(
        self,
        res: kmock.resource,
        namespace: str | None,
        name: str,
        old: dict[str, Any],
        new: dict[str, Any],
        subresource: str | None,
    ) -> dict[str, Any]:
        if self._has_status_subresource(res):
            if subresource == "status":
                new = {**old, "status": new.get("status")}
                if new["status"] is None:
                    new.pop("status")
            elif "status" in old:
                new["status"] = old["status"]
            else:
                new.pop("status", None)
        metadata = new.setdefault("metadata", {})
        for field in ("uid", "creationTimestamp", "name", "namespace", "deletionTimestamp"):
            if field in old["metadata"]:
                metadata[field] = old["metadata"][field]
        if json.dumps(new, sort_keys=True) == json.dumps(old, sort_keys=True):
            return old  # no change: no new revision, no event (as the API server does)
        metadata["resourceVersion"] = self._next_revision()
        key = (res, namespace, name)
        self.objects[key].history.append(new)
        if metadata.get("deletionTimestamp") and not metadata.get("finalizers"):
            self._remove(res, key, new)
        else:
            self._record(res, "MODIFIED", new)
        return copy.deepcopy(new)

    def _delete(self, res: kmock.resource, namespace: str | None, name: str) -> dict[str, Any]:
        old = self._stored(res, namespace, name)
        if old is None:
            raise _not_found(f"{res.plural} {name!r}")
        key = (res, namespace, name)
        if old["metadata"].get("finalizers"):
            if not old["metadata"].get("deletionTimestamp"):
                old["metadata"]["deletionTimestamp"] = _now()
                old["metadata"]["resourceVersion"] = self._next_revision()
                self.objects[key].history.append(old)
                self._record(res, "MODIFIED", old)
            return old
        self._remove(res, key, old)
        return old

    def _remove(self, res: kmock.resource, key: Any, last: dict[str, Any]) -> None:
        last["metadata"]["resourceVersion"] = self._next_revision()
        self.objects[key].delete()
        self._record(res, "DELETED", last)
        self._collect_garbage(last["metadata"]["uid"])

    def _collect_garbage(self, owner_uid: str) -> None:
        for (res, namespace, name), obj in list(self.objects.items()):
            if obj.deleted:
                continue
            owners = obj.raw.get("metadata", {}).get("ownerReferences") or []
            if any(owner.get("uid") == owner_uid for owner in owners):
                self._delete(res, namespace, name)

    # --- lists and watches ----------------------------------------------------------

    def _list(
        self, res: kmock.resource, namespace: str | None, params: Mapping[str, str]
    ) -> dict[str, Any]:
        selector = params.get("labelSelector")
        items = [obj for obj in self.list(_key(res), namespace) if _matches(obj, selector)]
        kind = self.resources[res].kind or res.plural.capitalize()
        return {
            "apiVersion": f"{res.group}/{res.version}" if res.group else res.version,
            "kind": f"{kind}List",
            "metadata": {"resourceVersion": str(self._revision)},
            "items": items,
        }

    async def _watch_response(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        raw = request._raw_request
        response = aiohttp.web.StreamResponse(status=200)
        response.content_type = "application/json"
        await response.prepare(raw)
        res, namespace = request.resource, request.namespace
        selector = request.params.get("labelSelector")
        since = request.params.get("resourceVersion")
        timeout = float(request.params.get("timeoutSeconds", "3600"))
        deadline = asyncio.get_running_loop().time() + timeout
        if since is None:
            cursor = self._revision
            for obj in self.list(_key(res), namespace):
                if _matches(obj, selector):
                    await _write(response, {"type": "ADDED", "object": obj})
        else:
            cursor = int(since)
        while not self._closing and asyncio.get_running_loop().time() < deadline:
            if raw.transport is None or raw.transport.is_closing():
                break
            changed = self._changed
            for revision, event_res, event in list(self._log):
                if revision <= cursor or event_res != res:
                    continue
                cursor = revision
                obj = event["object"]
                if namespace is not None and obj["metadata"].get("namespace") != namespace:
                    continue
                if _matches(obj, selector):
                    await _write(response, event)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), timeout=WATCH_POLL)
        return response


def _header(request: kmock.Request, name: str) -> str | None:
    wanted = name.lower()
    return next((v for k, v in request.headers.items() if k.lower() == wanted), None)


def _check_patch_type(res: kmock.resource, content_type: str | None, patch: Any) -> None:
    """Refuse a patch whose Content-Type does not fit its body, as the API server does."""
    kind = (content_type or "").split(";")[0].strip().lower()
    custom = "." in (res.group or "") and not str(res.group).endswith(".k8s.io")
    if kind == "application/strategic-merge-patch+json" and custom:
        raise ApiError(
            status=415,
            reason="UnsupportedMediaType",
            message=f"the body of the request was in an unknown format - accepted media "
            f"types include: application/json-patch+json, application/merge-patch+json "
            f"(not {kind} for a custom resource)",
        )
    merging = kind in ("application/merge-patch+json", "application/strategic-merge-patch+json")
    if isinstance(patch, list) and kind != "application/json-patch+json":
        raise ApiError(status=400, reason="BadRequest", message=f"a list body as {kind!r}")
    if isinstance(patch, Mapping) and not merging:
        raise ApiError(status=400, reason="BadRequest", message=f"an object body as {kind!r}")


def _key(res: kmock.resource) -> str:
    return f"{res.group}/{res.version}/{res.plural}" if res.group else f"{res.version}/{res.plural}"


async def _write(response: aiohttp.web.StreamResponse, event: Mapping[str, Any]) -> None:
    with contextlib.suppress(ConnectionResetError, RuntimeError):
        await response.write(json.dumps(event).encode() + b"\n")


def _matches(obj: Mapping[str, Any], selector: str | None) -> bool:
    """Equality-based label selectors: ``a=b``, ``a==b``, ``a!=b``, ``a``, ``!a``."""
    if not selector:
        return True
    labels = obj.get("metadata", {}).get("labels") or {}
    for requirement in selector.split(","):
        requirement = requirement.strip()
        if "!=" in requirement:
            key, value = requirement.split("!=", 1)
            if labels.get(key) == value:
                return False
        elif "=" in requirement:
            key, value = requirement.replace("==", "=").split("=", 1)
            if labels.get(key) != value:
                return False
        elif requirement.startswith("!"):
            if requirement[1:] in labels:
                return False
        elif requirement not in labels:
            return False
    return True


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
