"""The client configuration (``parties.yaml``): how to reach every party, and who you are.

::

    version: 1
    name: local                  # the deployment's name, shown in messages
    identity: you                # the identity this client acts as (a key of tokens)
    key_hash_secret: 9c1f…       # consortium-wide key for text key columns (hex)
    partition_rows: 65536        # optional: rows of every partition, fixed by the consortium
    client_dir: client           # this client's job records and key dictionary
    parties:
      - name: party-0
        secret_store: http://127.0.0.1:41001
        execution: http://127.0.0.1:41002
        tuples: http://127.0.0.1:41003       # optional: status only
        ca: pki/ca.pem                       # verifies https URLs (optional)
        tokens: {you: "…"}                   # or `token: "…"` for the default identity

Relative paths are relative to the file's folder.  The file holds bearer tokens:
keep it private (``tally local up`` writes it with mode 0600).

Which file is used: an explicit path (``tally.connect(path)``, ``--config``), else
``TALLY_CONFIG``, else the *current deployment* that ``tally local up`` records in
``$XDG_CONFIG_HOME/tally/current`` (``~/.config/tally/current``), like kubectl's
current context.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import ssl
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

from tally.client.errors import ConfigError

CONFIG_ENV = "TALLY_CONFIG"


@dataclass(frozen=True)
class PartyEndpoint:
    """One party as the client sees it: its REST endpoints and this client's token there."""

    index: int
    name: str
    secret_store: str
    execution: str
    token: str = field(repr=False)
    tuples: str | None = None
    ca: Path | None = None

    @property
    def verify(self) -> ssl.SSLContext | bool:
        """What httpx verifies https certificates against (the configured CA, if any)."""
        if self.ca is None:
            return True
        return ssl.create_default_context(cafile=str(self.ca))


@dataclass(frozen=True)
class ClientConfig:
    """A parsed ``parties.yaml`` for one identity."""

    path: Path
    name: str
    identity: str
    parties: tuple[PartyEndpoint, ...]
    key_hash_secret: bytes | None = field(default=None, repr=False)
    client_dir: Path = Path(".")
    identities: tuple[str, ...] = ()
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)
    partition_rows: int | None = None
    """Rows of every partition of a partitioned upload, fixed by the consortium."""
    insecure: bool = False
    """Plaintext HTTP to other machines allowed (``--insecure``)."""

    def as_identity(self, identity: str) -> ClientConfig:
        """The same deployment seen by another identity configured in the file."""
        return parse_config(self.raw, self.path, identity, self.insecure)


def config_home() -> Path:
    """``$XDG_CONFIG_HOME/tally`` (default ``~/.config/tally``)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "tally"


def current_pointer() -> Path:
    """The file naming the current deployment's ``parties.yaml``."""
    return config_home() / "current"


def set_current(path: Path) -> None:
    """Make ``path`` the current deployment (``tally local up`` does this)."""
    pointer = current_pointer()
    pointer.parent.mkdir(parents=True, exist_ok=True)
    temporary = pointer.with_suffix(".tmp")
    temporary.write_text(str(Path(path).resolve()) + "\n")
    temporary.replace(pointer)


def current_config_path() -> Path | None:
    """The current deployment's ``parties.yaml``, if one was recorded."""
    pointer = current_pointer()
    if not pointer.exists():
        return None
    text = pointer.read_text().strip()
    return Path(text) if text else None


def resolve_config_path(path: str | os.PathLike[str] | None = None) -> Path:
    """The ``parties.yaml`` to use: explicit, ``TALLY_CONFIG``, or the current deployment."""
    if path is not None:
        return Path(path)
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    current = current_config_path()
    if current is None:
        raise ConfigError(
            "no Tally deployment selected: start one with `tally local up`, or pass "
            f"--config parties.yaml (or set {CONFIG_ENV})"
        )
    return current


def load_config(
    path: str | os.PathLike[str] | None = None,
    identity: str | None = None,
    insecure: bool = False,
) -> ClientConfig:
    """Read and check a ``parties.yaml``; errors say which field is wrong."""
    resolved = resolve_config_path(path)
    try:
        text = resolved.read_text()
    except FileNotFoundError:
        hint = ""
        if path is None and not os.environ.get(CONFIG_ENV):
            hint = " (the current deployment's state folder is gone: run `tally local up`)"
        raise ConfigError(f"client configuration {resolved} does not exist{hint}") from None
    except OSError as error:
        raise ConfigError(f"cannot read client configuration {resolved}: {error}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{resolved} is not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{resolved}: expected a mapping with 'parties'")
    return parse_config(raw, resolved, identity, insecure)


def _text(entry: Mapping[str, Any], key: str, where: str, required: bool = True) -> str | None:
    value = entry.get(key)
    if value is None:
        if required:
            raise ConfigError(f"{where}: missing '{key}'")
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: '{key}' must be a non-empty string")
    return value


def _url(entry: Mapping[str, Any], key: str, where: str, required: bool = True) -> str | None:
    value = _text(entry, key, where, required)
    if value is not None and not value.startswith(("http://", "https://")):
        raise ConfigError(f"{where}: '{key}' must be an http:// or https:// URL, got {value!r}")
    return value.rstrip("/") if value is not None else None


def _tokens(entry: Mapping[str, Any], where: str, default_identity: str) -> dict[str, str]:
    tokens = entry.get("tokens") or {}
    if not isinstance(tokens, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and v for k, v in tokens.items()
    ):
        raise ConfigError(f"{where}: 'tokens' must map identities to token strings")
    out = dict(tokens)
    if entry.get("token") is not None:
        out[default_identity] = str(_text(entry, "token", where))
    return out


def _check_transport(url: str | None, key: str, where: str, insecure: bool) -> None:
    """Refuse plaintext HTTP to another machine: one observer would see every share."""
    if url is None or not url.startswith("http://") or insecure:
        return
    host = urllib.parse.urlsplit(url).hostname or ""
    loopback = host == "localhost"
    with contextlib.suppress(ValueError):
        loopback = loopback or ipaddress.ip_address(host).is_loopback
    if not loopback:
        raise ConfigError(
            f"{where}: '{key}' is http:// to {host}: shares and tokens would cross the "
            "network in the clear. Use https://, or --insecure (insecure: true in "
            "parties.yaml) on a network you trust"
        )


def parse_config(
    raw: Mapping[str, Any], path: Path, identity: str | None = None, insecure: bool = False
) -> ClientConfig:
    """A :class:`ClientConfig` from the parsed YAML of ``path``."""
    where = str(path)
    insecure = insecure or raw.get("insecure") is True
    base = path.parent
    default_identity = _text(raw, "identity", where, required=False) or "you"
    chosen = identity or os.environ.get("TALLY_IDENTITY") or default_identity
    parties_raw = raw.get("parties")
    if not isinstance(parties_raw, list) or not parties_raw:
        raise ConfigError(f"{where}: 'parties' must list at least one party")
    parties = []
    known: set[str] | None = None
    for index, entry in enumerate(parties_raw):
        here = f"{where}: party {index}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{here}: expected a mapping")
        tokens = _tokens(entry, here, default_identity)
        known = set(tokens) if known is None else known & set(tokens)
        if chosen not in tokens:
            raise ConfigError(
                f"{here}: no token for identity {chosen!r} "
                f"(configured: {', '.join(sorted(tokens)) or 'none'})"
            )
        ca = _text(entry, "ca", here, required=False)
        for service in ("secret_store", "execution", "tuples"):
            _check_transport(entry.get(service), service, here, insecure)
        parties.append(
            PartyEndpoint(
                index=index,
                name=_text(entry, "name", here, required=False) or f"party-{index}",
                secret_store=str(_url(entry, "secret_store", here)),
                execution=str(_url(entry, "execution", here)),
                tuples=_url(entry, "tuples", here, required=False),
                token=tokens[chosen],
                ca=(base / ca) if ca else None,
            )
        )
    secret = raw.get("key_hash_secret")
    key: bytes | None = None
    if secret is not None:
        try:
            key = bytes.fromhex(str(secret))
        except ValueError:
            raise ConfigError(f"{where}: 'key_hash_secret' must be hex") from None
        if len(key) < 16:
            raise ConfigError(f"{where}: 'key_hash_secret' needs at least 16 bytes (32 hex digits)")
    partition_rows = raw.get("partition_rows")
    if partition_rows is not None and not (
        isinstance(partition_rows, int)
        and not isinstance(partition_rows, bool)
        and 1 <= partition_rows <= 1 << 40
    ):
        raise ConfigError(f"{where}: 'partition_rows' must be a positive integer")
    client_dir = raw.get("client_dir")
    name = _text(raw, "name", where, required=False) or path.parent.name or "tally"
    directory = (
        base / str(client_dir)
        if client_dir
        else Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
        / "tally"
        / name
    )
    return ClientConfig(
        path=path,
        name=name,
        identity=chosen,
        parties=tuple(parties),
        key_hash_secret=key,
        client_dir=directory,
        identities=tuple(sorted(known or ())),
        raw=dict(raw),
        partition_rows=partition_rows,
        insecure=insecure,
    )


def with_parties(config: ClientConfig, parties: tuple[PartyEndpoint, ...]) -> ClientConfig:
    """A copy with other endpoints (tests point one party at a dead port)."""
    return replace(config, parties=parties)


def redact(token: str) -> str:
    """A token as it may be shown: its first four characters only."""
    return f"{token[:4]}…" if token else "(none)"
