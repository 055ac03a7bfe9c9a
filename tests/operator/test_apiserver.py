"""The test API server itself: the behaviours kopf relies on (see apiserver.py)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import kmock

from tests.operator.apiserver import ApiServer
from tests.operator.harness import AJ, PODS, RESOURCES, VERBS

BASE = "/apis/tally.dev/v1alpha1/namespaces/ns/analyticsjobs"


async def serve() -> tuple[ApiServer, kmock.Server]:
    api = ApiServer()
    await api.__aenter__()
    server = kmock.Server(api)
    await server.__aenter__()
    for resource, info in RESOURCES.items():
        info.verbs.update(VERBS)
        api.resources[resource] = info
    return api, server


async def stop(api: ApiServer, server: kmock.Server) -> None:
    api.stop_watches()
    await server.__aexit__(None, None, None)
    await api.__aexit__(None, None, None)


async def call(
    server: kmock.Server,
    method: str,
    url: str,
    body: Any = None,
    content_type: str = "application/json",
) -> tuple[int, Any]:
    data = json.dumps(body) if body is not None else None
    async with server.client.request(
        method, url, data=data, headers={"Content-Type": content_type}
    ) as response:
        return response.status, await response.json()


def test_objects_get_metadata_and_lists_get_kind_and_version() -> None:
    async def scenario() -> None:
        api, server = await serve()
        try:
            status, created = await call(
                server, "POST", BASE, {"metadata": {"name": "a"}, "spec": {}, "status": {"x": 1}}
            )
            assert status == 201
            meta = created["metadata"]
            assert meta["uid"] and meta["resourceVersion"] and meta["creationTimestamp"]
            assert meta["namespace"] == "ns" and "status" not in created  # status subresource
            status, _ = await call(server, "POST", BASE, {"metadata": {"name": "a"}})
            assert status == 409
            status, listing = await call(server, "GET", BASE)
            assert listing["kind"] == "AnalyticsJobList"
            assert listing["metadata"]["resourceVersion"] == meta["resourceVersion"]
        finally:
            await stop(api, server)

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_patches_status_subresource_and_failed_json_patch_test() -> None:
    async def scenario() -> None:
        api, server = await serve()
        try:
            _, created = await call(
                server, "POST", BASE, {"metadata": {"name": "a"}, "spec": {"n": 1}}
            )
            status, body = await call(
                server,
                "PATCH",
                f"{BASE}/a",
                {"spec": {"n": 2}, "status": {"phase": "X"}},
                "application/merge-patch+json",
            )
            assert status == 200 and body["spec"] == {"n": 2} and "status" not in body
            status, body = await call(
                server,
                "PATCH",
                f"{BASE}/a/status",
                {"spec": {"n": 3}, "status": {"phase": "Y"}},
                "application/merge-patch+json",
            )
            assert body["spec"] == {"n": 2} and body["status"] == {"phase": "Y"}
            stale = [
                {
                    "op": "test",
                    "path": "/metadata/resourceVersion",
                    "value": created["metadata"]["resourceVersion"],
                },
                {"op": "add", "path": "/metadata/finalizers", "value": ["f"]},
            ]
            status, _ = await call(
                server, "PATCH", f"{BASE}/a", stale, "application/json-patch+json"
            )
            assert status == 422
        finally:
            await stop(api, server)

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_watch_replays_only_changes_after_its_resource_version() -> None:
    async def scenario() -> None:
        api, server = await serve()
        try:
            await api.create(AJ, {"metadata": {"name": "old", "namespace": "ns"}})
            _, listing = await call(server, "GET", BASE)
            since = listing["metadata"]["resourceVersion"]
            await api.create(AJ, {"metadata": {"name": "new", "namespace": "ns"}})
            url = f"{BASE}?watch=true&resourceVersion={since}&timeoutSeconds=1"
            async with server.client.get(url) as response:
                lines = [json.loads(line) async for line in response.content if line.strip()]
            assert [(e["type"], e["object"]["metadata"]["name"]) for e in lines] == [
                ("ADDED", "new")
            ]
        finally:
            await stop(api, server)

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_finalizers_hold_deletion_and_owned_objects_are_collected() -> None:
    async def scenario() -> None:
        api, server = await serve()
        try:
            owner = await api.create(
                AJ, {"metadata": {"name": "a", "namespace": "ns", "finalizers": ["f"]}}
            )
            ref = {
                "apiVersion": "tally.dev/v1alpha1",
                "kind": "AnalyticsJob",
                "name": "a",
                "uid": owner["metadata"]["uid"],
            }
            await api.create(
                PODS, {"metadata": {"name": "p", "namespace": "ns", "ownerReferences": [ref]}}
            )
            await api.delete(AJ, "ns", "a")
            held = api.get(AJ, "ns", "a")
            assert held is not None and held["metadata"]["deletionTimestamp"]
            await api.patch(AJ, "ns", "a", {"metadata": {"finalizers": None}})
            assert api.get(AJ, "ns", "a") is None
            assert api.get(PODS, "ns", "p") is None
        finally:
            await stop(api, server)

    asyncio.run(asyncio.wait_for(scenario(), 30))
