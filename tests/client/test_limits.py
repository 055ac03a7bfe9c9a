"""A body far above a route's limit is refused by every service before it is buffered.

Against the running embedded deployment (every service a process): a 1 GiB body,
declared or streamed chunked, to a JSON route of each service, with and without a
token, is answered 413 while the process's resident memory grows by less than 64 MB.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tally.local_deployment import LocalDeployment

GIB = 1 << 30
CHUNK = b"\x00" * (1 << 20)
ROUTES = {
    "secret-store": "/v1/datasets",
    "execution": "/v1/jobs",
    "tuples": "/v1/reservations",
}


def resident_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def gibibyte() -> Iterator[bytes]:
    for _ in range(GIB // len(CHUNK)):
        yield CHUNK


def declare(url: str, headers: dict[str, str], tls: ssl.SSLContext) -> int:
    """Declare a 1 GiB body and send none of it: the answer must come from the header."""
    target = httpx.URL(url)
    lines = [f"POST {target.raw_path.decode()} HTTP/1.1", f"Host: {target.host}"]
    lines += [f"{k}: {v}" for k, v in {**headers, "Content-Length": str(GIB)}.items()]
    with (
        socket.create_connection((target.host, target.port or 443), timeout=30) as raw,
        tls.wrap_socket(raw, server_hostname=target.host) as conn,
    ):
        conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        status_line = conn.makefile("rb").readline().decode()
    return int(status_line.split()[1])


def stream(url: str, headers: dict[str, str], tls: ssl.SSLContext) -> int | None:
    """The status of a chunked 1 GiB POST, or None when the server closed the connection."""
    try:
        with httpx.Client(timeout=60.0, trust_env=False, verify=tls) as http:
            return http.post(url, content=gibibyte(), headers=headers).status_code
    except httpx.TransportError:
        return None


@pytest.mark.parametrize("service", sorted(ROUTES))
def test_a_gibibyte_body_is_refused_without_being_buffered(
    deployment: LocalDeployment, service: str
) -> None:
    (state,) = [s for s in deployment.status() if s.service == service and s.party == 0]
    assert state.pid is not None
    token = deployment.connect("analyst").config.parties[0].token
    url = state.url.rstrip("/") + ROUTES[service]
    tls = ssl.create_default_context(cafile=str(deployment.dir / "pki" / "ca.pem"))
    before = resident_bytes(state.pid)
    for headers in ({}, {"Authorization": f"Bearer {token}"}):
        base = {**headers, "Content-Type": "application/octet-stream"}
        assert declare(url, base, tls) == 413
        assert stream(url, base, tls) in (413, None)
    grown = resident_bytes(state.pid) - before
    print(f"{service}: 4 x 1 GiB bodies refused, resident memory grew {grown / 1e6:.1f} MB")
    assert grown < 64 << 20
