"""parties.yaml: the client refuses plaintext HTTP to another machine unless told otherwise."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tally.client.config import parse_config
from tally.client.errors import ConfigError


def raw(url: str, **top: Any) -> dict[str, Any]:
    party = {"secret_store": url, "execution": url, "tokens": {"you": "t"}}
    return {"version": 1, "parties": [party], **top}


@pytest.mark.parametrize(
    "url",
    ["https://store.example", "http://127.0.0.1:8100", "http://localhost:1", "http://[::1]:9"],
)
def test_https_anywhere_and_http_on_loopback_are_accepted(url: str) -> None:
    assert parse_config(raw(url), Path("parties.yaml")).parties[0].secret_store == url


def test_http_to_another_machine_is_refused_unless_insecure() -> None:
    # before, http:// to any host was accepted: one observer at a provider's egress
    # would see every party's share (regression)
    with pytest.raises(ConfigError, match="http:// to store.example.*--insecure"):
        parse_config(raw("http://store.example:8100"), Path("parties.yaml"))
    assert parse_config(raw("http://10.0.0.5"), Path("p.yaml"), insecure=True).insecure
    assert parse_config(raw("http://10.0.0.5", insecure=True), Path("p.yaml")).insecure
