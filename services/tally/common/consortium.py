"""The consortium document: the parties and their public endpoints, as the operator renders it.

The operator turns the Consortium resource into the ConfigMap ``<name>-parties`` (key
``consortium.json``); the execution service, the tuple-service and the workers mount it
and read their peers from it (``TALLY_EXECUTION_CONSORTIUM_FILE``,
``TALLY_TUPLES_CONSORTIUM_FILE``; workers ``TALLY_CONSORTIUM_FILE``)::

    {"localParty": "bank-a", "tupleGenerator": "hm3",
     "parties": [{"id": "bank-a", "index": 0, "partyLink": "a.example:7100",
                  "tupleLink": "a.example:7200", ...}, ...]}

Kubernetes updates a mounted ConfigMap in place (within about a minute), so an edit of
the Consortium reaches running services without a restart: :class:`PeerDirectory`
re-reads the file when it changes.  An edit that would change what a running service
cannot change under its feet (the number of parties, which party this is) is not
applied; the service keeps the last good list and says that a restart is needed.

The document holds addresses only; nothing in it is secret.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tally.common.settings import ConfigurationError

log = logging.getLogger(__name__)

ENDPOINT_KEYS = ("partyLink", "tupleLink")
_HOST_PORT = re.compile(r"^[A-Za-z0-9.\-]+:[0-9]{1,5}$")
_MAX_BYTES = 1 << 20


@dataclass(frozen=True)
class ConsortiumDocument:
    """A validated ``consortium.json``."""

    local_party: str
    local_index: int
    tuple_generator: str | None
    party_ids: tuple[str, ...]
    endpoints: dict[str, tuple[str, ...]]
    """``partyLink`` / ``tupleLink`` -> host:port of every party, by index ("" if absent)."""

    def peers(self, key: str) -> list[str]:
        """The endpoints under ``key`` of every party, by index; every one must be set."""
        found = list(self.endpoints[key])
        missing = [self.party_ids[i] for i, value in enumerate(found) if not value]
        if missing:
            raise ConfigurationError(
                f"the consortium document gives no {key} endpoint for {', '.join(missing)}"
            )
        return found


def parse_consortium(text: str, source: str = "consortium.json") -> ConsortiumDocument:
    """Validate the document's text; a ConfigurationError names every problem found."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigurationError(
            f"{source} is not JSON: {error.msg} (line {error.lineno})"
        ) from None
    if not isinstance(raw, dict):
        raise ConfigurationError(f"{source} must hold a JSON object")
    problems: list[str] = []
    parties = raw.get("parties")
    if not isinstance(parties, list) or len(parties) < 2:
        raise ConfigurationError(f"{source}: 'parties' must list at least two parties")
    by_index: dict[int, dict[str, object]] = {}
    for position, party in enumerate(parties):
        if not isinstance(party, dict):
            problems.append(f"parties[{position}] must be an object")
            continue
        index, party_id = party.get("index"), party.get("id")
        if not isinstance(index, int) or isinstance(index, bool):
            problems.append(f"parties[{position}].index must be an integer")
            continue
        if not isinstance(party_id, str) or not party_id:
            problems.append(f"parties[{position}].id must be a non-empty string")
            continue
        if index in by_index:
            problems.append(f"index {index} is given twice")
        by_index[index] = party
        for key in ENDPOINT_KEYS:
            value = party.get(key)
            if value is not None and not (isinstance(value, str) and _HOST_PORT.match(value)):
                problems.append(f"parties[{position}].{key} must be host:port")
    if not problems and sorted(by_index) != list(range(len(parties))):
        problems.append(f"indices must be 0..{len(parties) - 1}, got {sorted(by_index)}")
    if problems:
        raise ConfigurationError(f"{source}: " + "; ".join(problems))
    ordered = [by_index[i] for i in range(len(parties))]
    ids = tuple(str(p["id"]) for p in ordered)
    if len(set(ids)) != len(ids):
        raise ConfigurationError(f"{source}: party ids must be unique")
    local = raw.get("localParty")
    if not isinstance(local, str) or local not in ids:
        raise ConfigurationError(f"{source}: 'localParty' must be the id of one of the parties")
    generator = raw.get("tupleGenerator")
    if generator is not None and not isinstance(generator, str):
        raise ConfigurationError(f"{source}: 'tupleGenerator' must be a string")
    endpoints = {key: tuple(str(p.get(key) or "") for p in ordered) for key in ENDPOINT_KEYS}
    return ConsortiumDocument(
        local_party=local,
        local_index=ids.index(local),
        tuple_generator=generator or None,
        party_ids=ids,
        endpoints=endpoints,
    )


def load_consortium(path: Path) -> ConsortiumDocument:
    """Read and validate the document at ``path``."""
    try:
        with path.open("rb") as handle:
            data = handle.read(_MAX_BYTES + 1)
    except OSError as error:
        raise ConfigurationError(
            f"cannot read the consortium document {path}: {error.strerror}"
        ) from None
    if len(data) > _MAX_BYTES:
        raise ConfigurationError(f"the consortium document {path} is larger than 1 MiB")
    return parse_consortium(data.decode("utf-8", errors="replace"), str(path))


def peers_from_file(
    path: Path, key: str, party: int | None, *, service: str
) -> tuple[list[str], int]:
    """``(peers, party index)`` for a service configured with a consortium document.

    ``party`` is the index the service was also given, if any: it must be the
    document's local party, or the configuration is refused as contradictory.
    """
    document = load_consortium(path)
    if party is not None and party != document.local_index:
        raise ConfigurationError(
            f"the {service} is configured as party {party}, but the consortium document "
            f"{path} says this is {document.local_party!r} (index {document.local_index})"
        )
    return document.peers(key), document.local_index


class PeerDirectory:
    """The current endpoints of every party under one key, re-read when the file changes.

    A static list (no file) never changes.  :meth:`current` is cheap (one ``stat``) and
    safe from any thread.
    """

    def __init__(
        self,
        peers: Sequence[str],
        *,
        path: Path | None = None,
        key: str = "partyLink",
        party: int | None = None,
    ) -> None:
        self._peers = list(peers)
        self._path = path
        self._key = key
        self._party = party
        self._lock = threading.Lock()
        self._seen = self._stamp()
        self.pending_restart: str | None = None
        """Why the file's latest content was not applied (a restart applies it), or None."""

    def _stamp(self) -> tuple[int, int, int] | None:
        if self._path is None:
            return None
        try:
            status = os.stat(self._path)
        except OSError:
            return None
        return (status.st_mtime_ns, status.st_size, status.st_ino)

    def current(self) -> list[str]:
        """Every party's endpoint by index, as the document says now."""
        if self._path is None:
            return list(self._peers)
        with self._lock:
            stamp = self._stamp()
            if stamp is not None and stamp != self._seen:
                self._seen = stamp
                self._reload()
            return list(self._peers)

    def _reload(self) -> None:
        assert self._path is not None
        try:
            document = load_consortium(self._path)
            peers = document.peers(self._key)
        except ConfigurationError as error:
            log.error("consortium document changed but is invalid, keeping the peers: %s", error)
            return
        reason = None
        if len(peers) != len(self._peers):
            reason = (
                f"the consortium now has {len(peers)} parties instead of {len(self._peers)}: "
                "restart the service to apply it"
            )
        elif self._party is not None and document.local_index != self._party:
            reason = (
                f"the consortium document now says this is party {document.local_index}, "
                f"not {self._party}: restart the service to apply it"
            )
        self.pending_restart = reason
        if reason is not None:
            log.error("consortium document not applied: %s", reason)
            return
        if peers != self._peers:
            pairs = zip(self._peers, peers, strict=True)
            changed = [i for i, (old, new) in enumerate(pairs) if old != new]
            log.info("consortium document: new %s endpoint of parties %s", self._key, changed)
            self._peers = peers
