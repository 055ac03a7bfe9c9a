"""KubeApi on kubernetes_asyncio, logged in with kopf's ConnectionInfo, against small
aiohttp servers on loopback (plain HTTP, HTTPS, and HTTPS with client certificates)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp.web
import kopf
import pytest

from tally.common.tls import PeerTLS, issue_certificate, make_ca
from tally_operator.kube import KubeApi, KubeConflict, KubeInvalid, KubeNotFound, KubeUnavailable

Handler = Callable[[aiohttp.web.Request], Awaitable[aiohttp.web.StreamResponse]]
NODE = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "labels": {"z": "a"}}}


@contextlib.asynccontextmanager
async def serving(
    handler: Handler, *, tls: ssl.SSLContext | None = None
) -> AsyncIterator[tuple[str, list[aiohttp.web.Request]]]:
    """Serve every path with ``handler``; yield the base URL and the requests seen."""
    seen: list[aiohttp.web.Request] = []

    async def record(request: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
        seen.append(request)
        return await handler(request)

    app = aiohttp.web.Application()
    app.router.add_route("*", "/{path:.*}", record)
    runner = aiohttp.web.AppRunner(app)
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"{'https' if tls else 'http'}://{host}:{port}", seen
    finally:
        await runner.cleanup()


async def node(request: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
    return aiohttp.web.json_response(NODE)


def status(code: int, message: str) -> aiohttp.web.Response:
    body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message}
    return aiohttp.web.json_response(body, status=code)


async def connected(info: kopf.ConnectionInfo) -> KubeApi:
    api = KubeApi(timeout=5.0)
    await api.connect(info)
    return api


def test_calls_carry_kopfs_credentials_and_map_the_api_servers_errors() -> None:
    answers = {"GET": 404, "POST": 409, "PATCH": 422, "PUT": 503, "DELETE": 404}

    async def handler(request: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
        return status(answers[request.method], f"nope: {request.method}")

    async def scenario() -> None:
        async with serving(handler) as (url, seen):
            api = await connected(kopf.ConnectionInfo(server=url, token="t0k"))
            try:
                with pytest.raises(KubeNotFound):
                    await api.read_node("x")
                with pytest.raises(KubeConflict, match="nope: POST"):
                    await api.create_job("ns", {"metadata": {"name": "j"}})
                with pytest.raises(KubeInvalid, match="refused it as invalid: nope: PATCH"):
                    await api.patch_analytics_job_status("ns", "a", {"phase": "Running"})
                with pytest.raises(KubeUnavailable, match="503 nope: PUT"):
                    await api.replace_config_map("ns", "c", {"metadata": {"name": "c"}})
                await api.delete_job("ns", "j")  # absent is fine
            finally:
                await api.close()
        assert {r.headers["Authorization"] for r in seen} == {"Bearer t0k"}
        assert [r.path for r in seen] == [
            "/api/v1/nodes/x",
            "/apis/batch/v1/namespaces/ns/jobs",
            "/apis/tally.dev/v1alpha1/namespaces/ns/analyticsjobs/a/status",
            "/api/v1/namespaces/ns/configmaps/c",
            "/apis/batch/v1/namespaces/ns/jobs/j",
        ]
        # a dict patch goes as a merge patch (the library would send json-patch)
        assert seen[2].headers["Content-Type"] == "application/merge-patch+json"
        assert seen[4].query["propagationPolicy"] == "Background"

    asyncio.run(scenario())


def test_reads_return_models_and_lists_filter_by_labels() -> None:
    async def handler(request: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
        if request.path.endswith("/pods"):
            assert request.query["labelSelector"] == "a=b"
            pod = {"metadata": {"name": "p"}, "spec": {"nodeName": "n1", "containers": []}}
            return aiohttp.web.json_response({"kind": "PodList", "items": [pod]})
        if request.path.endswith("/secrets/s"):
            return aiohttp.web.json_response({"metadata": {"name": "s"}, "data": {"k": "dg=="}})
        return await node(request)

    async def scenario() -> None:
        async with serving(handler) as (url, _):
            api = await connected(kopf.ConnectionInfo(server=url, token="t"))
            try:
                (pod,) = await api.list_pods("ns", label_selector="a=b")
                assert pod.spec.node_name == "n1"
                assert (await api.read_node("n1")).metadata.labels == {"z": "a"}
                assert (await api.read_secret("ns", "s")).data == {"k": "dg=="}
            finally:
                await api.close()

    asyncio.run(scenario())


def test_basic_auth_as_kopf_sends_it_and_a_new_login_replaces_the_old() -> None:
    async def scenario() -> None:
        async with serving(node) as (url, seen):
            api = await connected(kopf.ConnectionInfo(server=url, username="u", password="p"))
            try:
                await api.read_node("n1")
                await api.connect(kopf.ConnectionInfo(server=url, scheme="Token", token="new"))
                await api.read_node("n1")
            finally:
                await api.close()
        assert [r.headers["Authorization"] for r in seen] == ["Basic dTpw", "Token new"]

    asyncio.run(scenario())


def test_not_logged_in_and_unreachable_are_unavailable() -> None:
    async def scenario() -> None:
        with pytest.raises(KubeUnavailable, match="not logged in"):
            await KubeApi().read_node("n1")
        async with serving(node) as (url, _):
            pass  # the port is closed again
        api = await connected(kopf.ConnectionInfo(server=url, token="t"))
        try:
            with pytest.raises(KubeUnavailable, match="GET node n1"):
                await api.read_node("n1")
        finally:
            await api.close()

    asyncio.run(scenario())


@pytest.fixture(scope="module")
def pki() -> tuple[PeerTLS, PeerTLS, PeerTLS]:
    """The API server's certificate (for 127.0.0.1), a client's, and a stranger's."""
    ca, ca_key = make_ca("kube test CA")
    other_ca, other_key = make_ca("another CA")
    return (
        issue_certificate(ca, ca_key, "kube-apiserver", loopback=True),
        issue_certificate(ca, ca_key, "tally-operator"),
        issue_certificate(other_ca, other_key, "tally-operator"),
    )


def server_tls(server: PeerTLS, tmp_path: Path, *, client_ca: bytes | None) -> ssl.SSLContext:
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    cert.write_bytes(server.certificate)
    key.write_bytes(server.key)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    if client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cadata=client_ca.decode())
    return context


def test_https_verifies_the_api_server_with_kopfs_ca_or_is_told_insecure(
    pki: tuple[PeerTLS, PeerTLS, PeerTLS], tmp_path: Path
) -> None:
    server, _, stranger = pki
    ca_file = tmp_path / "ca.crt"
    ca_file.write_bytes(server.ca)

    async def read(info: kopf.ConnectionInfo) -> str:
        api = await connected(info)
        try:
            return str((await api.read_node("n1")).metadata.name)
        finally:
            await api.close()

    async def scenario() -> None:
        async with serving(node, tls=server_tls(server, tmp_path, client_ca=None)) as (url, _):
            assert await read(kopf.ConnectionInfo(server=url, ca_data=server.ca)) == "n1"
            assert await read(kopf.ConnectionInfo(server=url, ca_path=str(ca_file))) == "n1"
            # kopf's insecure flag (a local mock, a test cluster): no verification
            assert await read(kopf.ConnectionInfo(server=url, insecure=True)) == "n1"
            for wrong in (None, stranger.ca):
                with pytest.raises(KubeUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
                    await read(kopf.ConnectionInfo(server=url, ca_data=wrong))

    asyncio.run(scenario())


def test_client_certificates_from_kopfs_login_authenticate_the_operator(
    pki: tuple[PeerTLS, PeerTLS, PeerTLS], tmp_path: Path
) -> None:
    server, operator, stranger = pki
    tls = server_tls(server, tmp_path, client_ca=server.ca)

    async def scenario() -> None:
        async with serving(node, tls=tls) as (url, seen):
            mine = kopf.ConnectionInfo(
                server=url,
                ca_data=server.ca,
                certificate_data=operator.certificate,
                private_key_data=operator.key,
            )
            api = await connected(mine)
            try:
                assert (await api.read_node("n1")).metadata.name == "n1"
            finally:
                await api.close()
            for certificate, key in ((None, None), (stranger.certificate, stranger.key)):
                info = kopf.ConnectionInfo(
                    server=url,
                    ca_data=server.ca,
                    certificate_data=certificate,
                    private_key_data=key,
                )
                api = await connected(info)
                try:
                    with pytest.raises(KubeUnavailable):
                        await api.read_node("n1")
                finally:
                    await api.close()
        assert len(seen) == 1  # only the operator's own certificate got through

    asyncio.run(scenario())
