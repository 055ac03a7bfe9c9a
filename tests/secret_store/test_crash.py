"""Crash safety: the server dies between writing a share blob and recording it.

A real uvicorn process runs with the development-only hook
``debug_crash_after_blob_write``, which makes it exit right after the blob is
stored and before the metadata transaction. After a restart without the hook the
dataset must still be invisible, and retrying the same upload, then committing, must
work.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np

from tally.secret_store import SecretStoreSettings
from tally.secret_store.context import make_blob_store
from tally.secret_store.uploads import CRASH_EXIT_CODE
from tests.secret_store.conftest import auth, random_shares, sha256
from tests.servers import free_port, wait_for_port


def settings_env(settings: SecretStoreSettings) -> dict[str, str]:
    """``settings`` as TALLY_SECRET_STORE_* environment variables."""
    env = {}
    for name, value in settings.model_dump(mode="json").items():
        if value is None:
            continue
        if name == "s3_secret_key":
            value = settings.s3_secret_key.get_secret_value()
        if name == "tokens":
            value = [
                {**token, "token": spec.token.get_secret_value() if spec.token else None}
                for token, spec in zip(value, settings.tokens, strict=True)
            ]
        text = json.dumps(value) if isinstance(value, list | dict | bool) else str(value)
        env[f"TALLY_SECRET_STORE_{name.upper()}"] = text
    return env


@contextmanager
def server(
    settings: SecretStoreSettings, log: Path
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A uvicorn process serving ``settings``; yields (base URL, process)."""
    port = free_port()
    env = {**os.environ, **settings_env(settings)}
    with log.open("ab") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "tally.secret_store", "serve", "--port", str(port)],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_port(port, process, 60)
        yield f"http://127.0.0.1:{port}", process
    finally:
        if process.poll() is None:
            process.terminate()
        process.wait(30)


def test_crash_between_blob_write_and_commit(
    make_settings: Callable[..., SecretStoreSettings], tmp_path: Path
) -> None:
    settings = make_settings(debug_crash_after_blob_write=True)
    log = tmp_path / "server.log"
    data = random_shares(1000).tobytes()
    headers = {**auth("alice"), "Content-Type": "application/octet-stream"}
    spec = {"name": "crashy", "columns": [{"name": "v", "kind": "int"}], "rows": 1000}

    with server(settings, log) as (url, process):
        client = httpx.Client(base_url=url, timeout=30)
        created = client.post("/v1/datasets", json=spec, headers=auth("alice"))
        assert created.status_code == 201
        dataset_id = created.json()["id"]
        try:
            client.put(
                f"/v1/datasets/{dataset_id}/columns/v",
                content=data,
                headers={**headers, "Tally-Sha256": sha256(data)},
            )
            raise AssertionError("the server should have died mid-upload")
        except httpx.HTTPError:
            pass
        assert process.wait(30) == CRASH_EXIT_CODE

    blobs = make_blob_store(settings)
    assert len(list(blobs.list(f"datasets/{dataset_id}/"))) == 1  # it died after the blob write

    restarted = settings.model_copy(update={"debug_crash_after_blob_write": False})
    with server(restarted, log) as (url, _):
        client = httpx.Client(base_url=url, timeout=30)
        assert client.get(f"/v1/datasets/{dataset_id}", headers=auth("alice")).status_code == 404
        assert client.get("/v1/datasets", headers=auth("alice")).json()["total"] == 0
        assert (
            client.post(f"/v1/datasets/{dataset_id}/commit", headers=auth("alice")).status_code
            == 409
        )
        retry = client.put(
            f"/v1/datasets/{dataset_id}/columns/v",
            content=data,
            headers={**headers, "Tally-Sha256": sha256(data)},
        )
        assert retry.status_code == 201, retry.text
        assert (
            client.post(f"/v1/datasets/{dataset_id}/commit", headers=auth("alice")).status_code
            == 200
        )
        read = client.get(f"/v1/datasets/{dataset_id}/columns/v", headers=auth("alice"))
        assert np.array_equal(np.frombuffer(read.content, dtype="<u8"), np.frombuffer(data, "<u8"))
        assert client.get("/v1/datasets", headers=auth("alice")).json()["total"] == 1
    assert len(list(blobs.list(f"datasets/{dataset_id}/"))) == 1  # the orphan was swept
