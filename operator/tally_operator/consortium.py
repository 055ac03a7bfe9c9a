"""The Consortium resource: the parties of a deployment, validated, and its ConfigMap.

A Consortium lists every party (id, index, the endpoints of its PartyLink, TupleLink
and REST services, and the Secret holding its PartyLink certificates) and names which
of them is this party. The operator renders it into the ConfigMap
``<consortium>-parties`` (key ``consortium.json``), which worker pods and the services
mount, so that peers are configuration held as a resource rather than environment
variables.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from typing import Any, cast

from tally_operator.builders.job import consortium_configmap_name
from tally_operator.resources import (
    API_VERSION,
    APP_NAME,
    CONSORTIUM_FILE,
    CONSORTIUM_KIND,
    LABEL_CONSORTIUM,
    LABEL_MANAGED_BY,
    LABEL_NAME,
    MANAGED_BY,
)
from tally_operator.spec import InvalidSpecError

PARTY_ID = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
HOST_PORT = re.compile(r"^[A-Za-z0-9.-]+:[0-9]{1,5}$")
URL = re.compile(r"^https?://[^/\s]+")
GENERATORS = ("hm3", "ot", "dealer")


@dataclasses.dataclass(frozen=True)
class Party:
    """One computational party and how to reach it."""

    id: str
    index: int
    party_link: str
    tuple_link: str | None
    execution_url: str | None
    tls_secret: str | None


@dataclasses.dataclass(frozen=True)
class Consortium:
    """A validated Consortium spec."""

    local_party: str
    parties: tuple[Party, ...]
    tuple_generator: str

    def document(self) -> dict[str, Any]:
        """The JSON document workers and services read (``consortium.json``)."""
        return {
            "localParty": self.local_party,
            "tupleGenerator": self.tuple_generator,
            "parties": [
                {
                    "id": p.id,
                    "index": p.index,
                    "partyLink": p.party_link,
                    "tupleLink": p.tuple_link,
                    "executionUrl": p.execution_url,
                    "tlsSecret": p.tls_secret,
                }
                for p in sorted(self.parties, key=lambda p: p.index)
            ],
        }


def parse_consortium_spec(spec: Mapping[str, Any]) -> Consortium:
    """Validate a Consortium spec; raise InvalidSpecError listing all problems."""
    problems: list[str] = []
    raw_parties = spec.get("parties")
    parties: list[Party] = []
    if not isinstance(raw_parties, list) or len(raw_parties) < 2:
        problems.append("spec.parties: a consortium needs at least two parties")
        raw_parties = raw_parties if isinstance(raw_parties, list) else []
    for position, raw in enumerate(raw_parties):
        party = _parse_party(raw, f"spec.parties[{position}]", problems)
        if party is not None:
            parties.append(party)

    ids = [p.id for p in parties]
    if len(set(ids)) != len(ids):
        problems.append(f"spec.parties: ids must be unique, got {ids}")
    indices = sorted(p.index for p in parties)
    if parties and indices != list(range(len(parties))):
        problems.append(f"spec.parties: indices must be 0..{len(parties) - 1}, got {indices}")

    local = spec.get("localParty")
    if not isinstance(local, str) or local not in ids:
        problems.append(f"spec.localParty: must be the id of one of the parties, got {local!r}")

    generator = spec.get("tupleGenerator", "hm3" if len(parties) == 3 else "ot")
    if generator not in GENERATORS:
        problems.append(
            f"spec.tupleGenerator: must be one of {list(GENERATORS)}, got {generator!r}"
        )
    elif generator == "hm3" and len(parties) != 3:
        problems.append(f"spec.tupleGenerator: 'hm3' needs exactly 3 parties, got {len(parties)}")

    if problems:
        raise InvalidSpecError(problems)
    return Consortium(
        local_party=str(local), parties=tuple(parties), tuple_generator=str(generator)
    )


def _parse_party(raw: object, where: str, problems: list[str]) -> Party | None:
    if not isinstance(raw, Mapping):
        problems.append(f"{where}: must be an object")
        return None
    party_id, index = raw.get("id"), raw.get("index")
    endpoints = raw.get("endpoints", {})
    if not isinstance(endpoints, Mapping):
        problems.append(f"{where}.endpoints: must be an object")
        endpoints = {}
    party_link, tuple_link = endpoints.get("partyLink"), endpoints.get("tupleLink")
    execution = endpoints.get("execution")
    tls = raw.get("tls")
    tls_secret = tls.get("secretName") if isinstance(tls, Mapping) else None
    ok = True
    if not isinstance(party_id, str) or not PARTY_ID.match(party_id):
        problems.append(f"{where}.id: must be a DNS label, got {party_id!r}")
        ok = False
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        problems.append(f"{where}.index: must be a non-negative integer, got {index!r}")
        ok = False
    if not isinstance(party_link, str) or not HOST_PORT.match(party_link):
        problems.append(f"{where}.endpoints.partyLink: must be host:port, got {party_link!r}")
        ok = False
    if tuple_link is not None and not (isinstance(tuple_link, str) and HOST_PORT.match(tuple_link)):
        problems.append(f"{where}.endpoints.tupleLink: must be host:port, got {tuple_link!r}")
        ok = False
    if execution is not None and (not isinstance(execution, str) or not URL.match(execution)):
        problems.append(f"{where}.endpoints.execution: must be an http(s) URL, got {execution!r}")
        ok = False
    if not ok:
        return None
    return Party(
        id=str(party_id),
        index=cast(int, index),
        party_link=str(party_link),
        tuple_link=tuple_link,
        execution_url=execution,
        tls_secret=tls_secret,
    )


def build_consortium_configmap(
    *, name: str, namespace: str, uid: str, consortium: Consortium
) -> dict[str, Any]:
    """The ConfigMap holding ``consortium.json``, owned by the Consortium resource."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": consortium_configmap_name(name),
            "namespace": namespace,
            "labels": {
                LABEL_NAME: APP_NAME,
                LABEL_MANAGED_BY: MANAGED_BY,
                LABEL_CONSORTIUM: name,
            },
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": CONSORTIUM_KIND,
                    "name": name,
                    "uid": uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "data": {CONSORTIUM_FILE: json.dumps(consortium.document(), indent=2, sort_keys=True)},
    }
