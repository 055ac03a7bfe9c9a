"""Keyed pseudo-random functions that expand a 128-bit key and a label into ring words.

Every random value of the ``hm3`` generator is ``PRF(key, label)`` for a key
that two parties share and a label naming the batch and the value's role, so
both parties compute the same value without talking.  The function must be
a cryptographic PRF: a party later sees values derived from outputs of keys
it does not hold (masked openings), and a predictable generator would give
those keys' other outputs away.  That rules out numpy's PCG64 and Philox
(statistical generators whose state can be recovered from outputs).

* :class:`ShakePrf` (the default here, standard library only): SHAKE-128 of
  ``key || label`` as an extendable-output function.  About 0.4 GB/s.
* The tuple-service plugs in AES-128-CTR from ``cryptography`` (AES-NI, about
  9 GB/s) through the same interface; ``tally.mpc`` itself stays
  numpy-and-standard-library only.
"""

from __future__ import annotations

import hashlib
import secrets
from abc import ABC, abstractmethod

import numpy as np
from numpy.typing import NDArray

KEY_BYTES = 16
"""Pairwise and private keys are 128-bit."""

Words = NDArray[np.uint64]


def fresh_key() -> bytes:
    """A new key from the operating system's CSPRNG."""
    return secrets.token_bytes(KEY_BYTES)


class Prf(ABC):
    """Expands (key, label) into pseudo-random bytes: equal inputs, equal outputs."""

    name = "abstract"

    @abstractmethod
    def expand(self, key: bytes, label: bytes, size: int) -> bytes:
        """``size`` pseudo-random bytes for ``(key, label)``."""

    def words(self, key: bytes, label: bytes, count: int) -> Words:
        """``count`` pseudo-random ``uint64`` words for ``(key, label)``."""
        if len(key) != KEY_BYTES:
            raise ValueError(f"PRF keys are {KEY_BYTES} bytes, got {len(key)}")
        if count < 0:
            raise ValueError("cannot draw a negative number of words")
        if count == 0:
            return np.zeros(0, dtype=np.uint64)
        return np.frombuffer(self.expand(key, label, 8 * count), dtype=np.uint64).copy()


class ShakePrf(Prf):
    """SHAKE-128(key || label), read for as many bytes as needed (standard library)."""

    name = "shake128"

    def expand(self, key: bytes, label: bytes, size: int) -> bytes:
        return hashlib.shake_128(key + label).digest(size)
