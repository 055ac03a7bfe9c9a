"""AES-128-CTR as the ``hm3`` PRF (``cryptography``, AES-NI): about 9 GB/s on one core.

PRF(k, label) = AES-CTR under the subkey BLAKE2b-128(label; key=k), from a
zero counter.  Keyed BLAKE2b is a PRF, so subkeys of distinct labels are
independent; AES-CTR under a fresh key is a PRG.  The standard-library
SHAKE-128 PRF of :mod:`tally.mpc.offline.prf` is 25 times slower.
"""

from __future__ import annotations

import hashlib

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from tally.mpc.offline.prf import KEY_BYTES, Prf, Words

_ZERO_IV = bytes(16)


class AesCtrPrf(Prf):
    """AES-128-CTR keyed by BLAKE2b(label; key), written straight into a numpy buffer."""

    name = "aes128-ctr"

    def _encryptor(self, key: bytes, label: bytes) -> object:
        subkey = hashlib.blake2b(label, key=key, digest_size=16).digest()
        return Cipher(algorithms.AES(subkey), modes.CTR(_ZERO_IV)).encryptor()

    def expand(self, key: bytes, label: bytes, size: int) -> bytes:
        encryptor = self._encryptor(key, label)
        return encryptor.update(bytes(size))  # type: ignore[attr-defined, no-any-return]

    def words(self, key: bytes, label: bytes, count: int) -> Words:
        if len(key) != KEY_BYTES:
            raise ValueError(f"PRF keys are {KEY_BYTES} bytes, got {len(key)}")
        if count < 0:
            raise ValueError("cannot draw a negative number of words")
        out = np.zeros(count + 2, dtype=np.uint64)  # update_into wants 15 spare bytes
        if count:
            encryptor = self._encryptor(key, label)
            source = out[:count].view(np.uint8)
            encryptor.update_into(source, out.view(np.uint8))  # type: ignore[attr-defined]
        return out[:count]
