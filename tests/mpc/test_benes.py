"""Beneš networks: every permutation of 2^k wires is routed, checked by applying it."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tally.mpc.offline import benes


@pytest.mark.parametrize("k", range(1, 12))
def test_random_permutations_are_routed(k: int) -> None:
    rng = np.random.default_rng(k)
    size = 1 << k
    for _ in range(4):
        permutation = rng.permutation(size)
        bits = benes.route(permutation)
        assert len(bits) == len(benes.wirings(size)) == 2 * k - 1
        assert all(layer.shape == (size // 2,) for layer in bits)
        np.testing.assert_array_equal(benes.apply(np.arange(size), bits), permutation)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 7).flatmap(lambda k: st.permutations(range(1 << k))))
def test_any_permutation_is_routed(permutation: list[int]) -> None:
    """Identity, reversals, single swaps, long cycles: hypothesis shrinks toward them."""
    array = np.array(permutation, dtype=np.int64)
    np.testing.assert_array_equal(benes.apply(np.arange(len(array)), benes.route(array)), array)


def test_sizes_and_bad_sizes() -> None:
    assert [benes.size_for(rows) for rows in (0, 1, 2, 3, 4, 5, 1000)] == [2, 2, 2, 4, 4, 8, 1024]
    for size in (0, 1, 3, 6):
        with pytest.raises(ValueError, match="power-of-two"):
            benes.wirings(size)
        with pytest.raises(ValueError, match="power-of-two"):
            benes.route(np.arange(size))
