"""Key columns that hold strings (region names, product ids) as integer codes.

Every data provider maps key values to codes independently and identically,
so that equal keys meet inside MPC without anyone revealing them:

* with a public ``domain`` (the list of possible values, agreed in the
  consortium), a value's code is its position in the domain; results map back
  exactly;
* otherwise, a keyed hash: the first ``bits`` bits of HMAC-SHA256 under the
  consortium-wide key.  Parties never see the key, so codes reveal nothing by
  themselves.  Results map back through the values this client has encoded
  (kept in a small local dictionary); unknown codes come back as ``#<hex>``.
  With b bits and k distinct values, the chance of any collision is about
  k^2 / 2^(b+1): 40 bits keep it below 1e-6 for 1,000 values.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from tally.client.errors import InputError

DEFAULT_HASH_BITS = 40


@dataclass
class KeyCodec:
    """Maps the values of one key column to integer codes below 2^bits, and back."""

    bits: int
    domain: list[Any] | None = None
    hash_key: bytes | None = None
    seen: dict[int, str] = field(default_factory=dict)

    @classmethod
    def for_domain(cls, domain: Sequence[Any]) -> KeyCodec:
        """Codes are positions in a public domain."""
        values = list(domain)
        if len({str(v) for v in values}) != len(values):
            raise InputError("domain values must be distinct")
        bits = max(1, int(np.ceil(np.log2(max(len(values), 2)))))
        return cls(bits, domain=values)

    @classmethod
    def hashed(cls, hash_key: bytes, bits: int = DEFAULT_HASH_BITS) -> KeyCodec:
        """Codes are keyed hashes of the values' text."""
        if len(hash_key) < 16:
            raise InputError("the consortium key for hashing key columns needs at least 16 bytes")
        if not 8 <= bits <= 60:
            raise InputError("hashed key codes need 8..60 bits")
        return cls(bits, hash_key=hash_key)

    def _hash(self, text: str) -> int:
        assert self.hash_key is not None  # noqa: S101 - set by hashed()
        digest = hmac.new(self.hash_key, text.encode(), hashlib.sha256).digest()
        return int.from_bytes(digest[:8], "big") >> (64 - self.bits)

    def encode(self, values: Iterable[Any], column: str = "key") -> NDArray[np.int64]:
        """Codes for values; unknown domain values are an :class:`InputError` naming the row."""
        items = list(values)
        if self.domain is not None:
            index = {str(v): i for i, v in enumerate(self.domain)}
            codes = np.empty(len(items), dtype=np.int64)
            for row, value in enumerate(items):
                position = index.get(str(value))
                if position is None:
                    raise InputError(
                        f"column {column!r} row {row}: {value!r} is not in the key domain"
                    )
                codes[row] = position
            return codes
        distinct = {str(v) for v in items}
        table = {text: self._hash(text) for text in distinct}
        for text, code in table.items():
            previous = self.seen.get(code)
            if previous is not None and previous != text:
                raise InputError(
                    f"key values {previous!r} and {text!r} hash to the same code; "
                    "use more key bits or a public domain"
                )
            self.seen[code] = text
        return np.array([table[str(v)] for v in items], dtype=np.int64)

    def decode(self, codes: Iterable[int]) -> list[Any]:
        """Values for codes (domain positions, or hashes this client has seen)."""
        out: list[Any] = []
        for code in codes:
            code = int(code)
            if self.domain is not None:
                out.append(self.domain[code] if 0 <= code < len(self.domain) else None)
            else:
                out.append(self.seen.get(code, f"#{code:x}"))
        return out


class KeyDictionary:
    """This client's memory of key values, in a JSON file, to show results with names.

    It remembers the text behind hashed codes (per code width) and the public domains
    key columns were coded with (by :func:`domain_digest`).  It holds plaintext key
    values of the provider or analyst who wrote them, on their own machine only.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def _read(self) -> dict[str, Any]:
        if not self.path.exists():
            return {"hash": {}, "domains": {}}
        raw: dict[str, Any] = json.loads(self.path.read_text())
        raw.setdefault("hash", {})
        raw.setdefault("domains", {})
        return raw

    def _write(self, raw: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps(raw))
        temporary.replace(self.path)

    def load(self, bits: int = DEFAULT_HASH_BITS) -> dict[int, str]:
        """Every hashed code of this width remembered so far."""
        table = self._read()["hash"].get(str(bits), {})
        return {int(code): text for code, text in table.items()}

    def remember(self, seen: dict[int, str], bits: int = DEFAULT_HASH_BITS) -> None:
        """Add hashed codes of one width to the file (atomically)."""
        if not seen:
            return
        raw = self._read()
        table = raw["hash"].setdefault(str(bits), {})
        table.update({str(code): text for code, text in seen.items()})
        self._write(raw)

    def remember_domain(self, domain: Sequence[Any]) -> str:
        """Record a public domain; returns its digest."""
        digest = domain_digest(domain)
        raw = self._read()
        if digest not in raw["domains"]:
            raw["domains"][digest] = [_plain(value) for value in domain]
            self._write(raw)
        return digest

    def domain(self, digest: str) -> list[Any] | None:
        """A domain recorded under ``digest``, if this client has seen it."""
        found = self._read()["domains"].get(digest)
        return list(found) if found is not None else None


def _plain(value: Any) -> Any:
    """A JSON-friendly form of a domain value (numpy scalars to Python)."""
    return value.item() if isinstance(value, np.generic) else value


def domain_digest(domain: Sequence[Any]) -> str:
    """A short fingerprint of a public domain (what dataset tags record)."""
    text = json.dumps([str(value) for value in domain], separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class KeyCoding:
    """How a dataset's key column was coded: ``int`` codes, a keyed ``hash``, or a ``domain``.

    Recorded in the dataset's ``tally.keys`` tag (``region=domain:<digest>:<bits>``),
    so that every reader knows how to code group-by domains and decode results.
    """

    kind: str
    bits: int
    digest: str = ""

    def tag(self) -> str:
        """The tag text of this coding."""
        if self.kind == "domain":
            return f"domain:{self.digest}:{self.bits}"
        return f"{self.kind}:{self.bits}"

    @classmethod
    def parse(cls, text: str) -> KeyCoding:
        """The inverse of :meth:`tag`."""
        kind, _, rest = text.partition(":")
        if kind == "domain":
            digest, _, bits = rest.partition(":")
            return cls("domain", int(bits), digest)
        if kind not in ("int", "hash"):
            raise InputError(f"unknown key coding {text!r}")
        return cls(kind, int(rest))

    @classmethod
    def of(cls, codec: KeyCodec | None, bits: int) -> KeyCoding:
        """The coding of a column encoded with ``codec`` (None: integer codes)."""
        if codec is None:
            return cls("int", bits)
        if codec.domain is not None:
            return cls("domain", codec.bits, domain_digest(codec.domain))
        return cls("hash", codec.bits)


def format_key_tag(codings: dict[str, KeyCoding]) -> str:
    """``col=coding,col=coding`` for the ``tally.keys`` tag."""
    return ",".join(f"{name}={coding.tag()}" for name, coding in codings.items())


def parse_key_tag(text: str) -> dict[str, KeyCoding]:
    """The inverse of :func:`format_key_tag`."""
    out = {}
    for item in filter(None, text.split(",")):
        name, _, coding = item.partition("=")
        out[name] = KeyCoding.parse(coding)
    return out
