"""Peers from the consortium document (issue 17 item 6): the services follow the Consortium."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tally.common.consortium import PeerDirectory, load_consortium, parse_consortium
from tally.common.settings import ConfigurationError
from tally.execution.control import ControlClient, start_control_server
from tally.execution.settings import ExecutionSettings
from tally.tuples.settings import TuplesSettings


def document(local: str = "bank-b", **changes: Any) -> dict[str, Any]:
    """A document as the operator renders it (tally_operator.consortium.Consortium.document)."""
    parties = [
        {
            "id": name,
            "index": i,
            "partyLink": f"{name}.example:7100",
            "tupleLink": f"{name}.example:7200",
            "executionUrl": None,
            "tlsSecret": None,
        }
        for i, name in enumerate(["bank-a", "bank-b", "bank-c"])
    ]
    return {"localParty": local, "tupleGenerator": "hm3", "parties": parties, **changes}


def write(path: Path, content: dict[str, Any] | str) -> Path:
    """Replace the file as the kubelet does (a new file swapped in), so its identity changes."""
    fresh = path.with_suffix(".new")
    fresh.write_text(content if isinstance(content, str) else json.dumps(content))
    os.replace(fresh, path)
    return path


def test_the_document_gives_every_partys_endpoint_by_index(tmp_path: Path) -> None:
    shuffled = document()
    shuffled["parties"].reverse()  # the operator sorts, but order must not matter
    parsed = load_consortium(write(tmp_path / "consortium.json", shuffled))
    assert parsed.local_index == 1 and parsed.tuple_generator == "hm3"
    assert parsed.peers("partyLink") == [f"bank-{c}.example:7100" for c in "abc"]
    assert parsed.peers("tupleLink") == [f"bank-{c}.example:7200" for c in "abc"]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{not json", "is not JSON"),
        ("[]", "must hold a JSON object"),
        (json.dumps(document(local="bank-z")), "'localParty' must be the id"),
        (json.dumps({**document(), "parties": document()["parties"][:1]}), "at least two"),
        (
            json.dumps(
                {**document(), "parties": [dict(p, index=0) for p in document()["parties"]]}
            ),
            "index 0 is given twice",
        ),
        (
            json.dumps(
                {
                    **document(),
                    "parties": [dict(p, partyLink="no port") for p in document()["parties"]],
                }
            ),
            "partyLink must be host:port",
        ),
    ],
)
def test_a_bad_document_is_refused_with_the_reason(text: str, problem: str) -> None:
    with pytest.raises(ConfigurationError, match=problem):
        parse_consortium(text)


def test_a_missing_endpoint_is_named() -> None:
    content = document()
    content["parties"][2]["tupleLink"] = None
    with pytest.raises(ConfigurationError, match="no tupleLink endpoint for bank-c"):
        parse_consortium(json.dumps(content)).peers("tupleLink")


def test_execution_settings_take_peers_and_party_from_the_document(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path / "consortium.json", document())
    monkeypatch.setenv("TALLY_EXECUTION_CONSORTIUM_FILE", str(path))
    settings = ExecutionSettings()
    assert settings.party == 1
    assert settings.peers == [f"bank-{c}.example:7100" for c in "abc"]
    assert settings.endpoint_port == 7100

    monkeypatch.setenv("TALLY_EXECUTION_PARTY", "2")
    with pytest.raises(ValueError, match="configured as party 2.*'bank-b' \\(index 1\\)"):
        ExecutionSettings()
    monkeypatch.setenv("TALLY_EXECUTION_PARTY", "1")
    assert ExecutionSettings().party == 1

    monkeypatch.setenv("TALLY_EXECUTION_PEERS", json.dumps(["a:1", "b:2", "c:3"]))
    with pytest.raises(ValueError, match="set PEERS or CONSORTIUM_FILE, not both"):
        ExecutionSettings()


def test_a_worker_pod_reads_the_file_the_operator_mounts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The operator gives worker pods TALLY_CONSORTIUM_FILE (tally_operator.builders.job)."""
    monkeypatch.setenv("TALLY_CONSORTIUM_FILE", str(write(tmp_path / "c.json", document())))
    assert ExecutionSettings().peers[2] == "bank-c.example:7100"


def test_tuple_settings_take_peers_and_generator_from_the_document(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path / "consortium.json", document())
    monkeypatch.setenv("TALLY_TUPLES_CONSORTIUM_FILE", str(path))
    settings = TuplesSettings()
    assert (settings.party, settings.generator) == (1, "hm3")
    assert settings.peers == [f"bank-{c}.example:7200" for c in "abc"]
    assert settings.listen_address == "bank-b.example:7200"

    monkeypatch.setenv("TALLY_TUPLES_GENERATOR", "dealer")
    monkeypatch.setenv("TALLY_TUPLES_DEALER", "dealer.example:7300")
    with pytest.raises(ValueError, match="generator 'dealer'.*document says 'hm3'"):
        TuplesSettings()


def test_the_directory_follows_edits_but_not_ones_that_need_a_restart(tmp_path: Path) -> None:
    path = write(tmp_path / "consortium.json", document())
    directory = PeerDirectory(
        load_consortium(path).peers("partyLink"), path=path, key="partyLink", party=1
    )
    moved = document()
    moved["parties"][2]["partyLink"] = "bank-c-new.example:443"
    write(path, moved)
    assert directory.current()[2] == "bank-c-new.example:443"
    assert directory.pending_restart is None

    write(path, "{broken")  # an invalid edit keeps the last good peers
    assert directory.current()[2] == "bank-c-new.example:443"

    fewer = document()
    fewer["parties"] = fewer["parties"][:2]
    write(path, fewer)
    assert len(directory.current()) == 3
    assert directory.pending_restart is not None and "restart" in directory.pending_restart

    write(path, document(local="bank-a"))
    assert directory.current()[2] == "bank-c-new.example:443"
    assert directory.pending_restart is not None and "party 0, not 1" in directory.pending_restart

    write(path, document())  # a valid edit again: applied, nothing pending
    assert directory.current()[2] == "bank-c.example:7100"
    assert directory.pending_restart is None


class _Answers:
    """A PartyControl handler that says which server answered."""

    def __init__(self, name: str) -> None:
        self.name = name

    def proposal(self, job_id: str) -> tuple[bool, str, str, str]:
        return False, "", "", ""

    def locate(self, job_id: str, worker: int) -> tuple[str, str]:
        return f"{self.name}:1", "running"

    def abandon(self, job_id: str, sender: int, phase: str, reason: str) -> bool:
        return False


def test_a_consortium_edit_reaches_a_running_service(tmp_path: Path) -> None:
    """PartyControl calls go to a peer's new endpoint once the document names it."""

    async def scenario() -> None:
        old, old_port = await start_control_server(_Answers("old"), None, 2, "127.0.0.1:0")
        new, new_port = await start_control_server(_Answers("new"), None, 2, "127.0.0.1:0")
        content = document(local="bank-a")
        content["parties"] = content["parties"][:2]
        content["parties"][1]["partyLink"] = f"127.0.0.1:{old_port}"
        path = write(tmp_path / "consortium.json", content)
        directory = PeerDirectory(
            load_consortium(path).peers("partyLink"), path=path, key="partyLink", party=0
        )
        client = ControlClient(0, directory, None)
        try:
            assert (await client.locate(1, "job", 0)).address == "old:1"
            content["parties"][1]["partyLink"] = f"127.0.0.1:{new_port}"
            write(path, content)
            assert (await client.locate(1, "job", 0)).address == "new:1"
            assert client.endpoint(1) == f"127.0.0.1:{new_port}"
        finally:
            await client.close()
            await old.stop(None)
            await new.stop(None)

    asyncio.run(scenario())


def test_the_tuple_service_restarts_itself_to_apply_new_peers(tmp_path: Path) -> None:
    """TupleLink connects at start-up: an edit of its peers ends the process (SIGTERM)."""
    path = write(tmp_path / "consortium.json", document())
    script = textwrap.dedent(
        f"""
        import signal, sys, time
        from tally.tuples.__main__ import watch_consortium
        from tally.tuples.settings import TuplesSettings
        signal.signal(signal.SIGTERM, lambda *_: (print("terminated", flush=True), sys.exit(0)))
        watch_consortium(TuplesSettings(consortium_file={str(path)!r}), interval_s=0.05)
        print("watching", flush=True)
        time.sleep(30)
        print("timed out", flush=True)
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("TALLY_")}
    process = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "watching"
        write(path, "{broken")  # ignored: no restart for an invalid edit
        same = document()
        write(path, same)  # same peers: no restart either
        moved = document()
        moved["parties"][0]["tupleLink"] = "bank-a-new.example:7200"
        write(path, moved)
        out, _ = process.communicate(timeout=20)
        assert out.strip() == "terminated"
    finally:
        process.kill()
