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
    """This client's memory of hashed key values, in a JSON file (codes -> text).

    It holds plaintext key values of the provider or analyst who wrote them,
    on their own machine, so that results can be shown with names.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[int, str]:
        """Everything remembered so far."""
        if not self.path.exists():
            return {}
        raw = json.loads(self.path.read_text())
        return {int(code): text for code, text in raw.items()}

    def remember(self, seen: dict[int, str]) -> None:
        """Add codes to the file (atomically)."""
        merged = self.load() | seen
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps({str(k): v for k, v in merged.items()}))
        temporary.replace(self.path)
