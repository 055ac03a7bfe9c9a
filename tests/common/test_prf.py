"""The tuple-service's AES-CTR PRF."""

from __future__ import annotations

import numpy as np
import pytest

from tally.common.prf import AesCtrPrf


@pytest.mark.parametrize("count", [0, 1, 2, 3, 1001, (1 << 17) - 1, 1 << 17, 3 * (1 << 17) + 5])
def test_aes_words_are_the_expanded_keystream(count: int) -> None:
    """The shuffle route's PRF: words written block by block equal ``expand``'s bytes."""
    prf, key = AesCtrPrf(), bytes(range(16))
    words = prf.words(key, b"label", count)
    assert words.dtype == np.uint64 and words.shape == (count,)
    assert words.tobytes() == prf.expand(key, b"label", 8 * count)
