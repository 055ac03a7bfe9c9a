"""Fixed-key AES-128 (ECB over whole batches, AES-NI) as the ``ot`` generator's permutation.

The key is public and fixed (the correlation-robust hash needs a random
permutation, not a secret); :class:`tally.mpc.offline.ot.BlockHash` builds
the tweakable hash on top of it.
"""

from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from tally.mpc.offline.ot import BlockHash, Bytes

FIXED_KEY = bytes.fromhex("74616c6c792f6f742f666978656421")[:15] + b"\x01"
"""A public, fixed AES key ("tally/ot/fixed!" and 0x01)."""


class AesBlockHash(BlockHash):
    """pi(x) = AES_FIXED_KEY(x) on ``(m, 16)`` blocks in one ECB call."""

    def __init__(self) -> None:
        self._cipher = Cipher(algorithms.AES(FIXED_KEY), modes.ECB())

    def permute(self, blocks: Bytes) -> Bytes:
        """One ECB pass written straight into a numpy buffer (``update`` would copy twice)."""
        data = np.ascontiguousarray(blocks, dtype=np.uint8)
        size = data.size
        out = np.empty(size + _SPARE_BYTES, dtype=np.uint8)
        encryptor = self._cipher.encryptor()
        encryptor.update_into(data.reshape(-1).data, out.data)
        encryptor.finalize()
        return out[:size].reshape(-1, 16)


_SPARE_BYTES = 16
"""``update_into`` in older ``cryptography`` releases wants 15 bytes past the output."""
