"""Tests for tally.mpc.ring: encoding into Z_2^64 and additive sharing."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from tally.mpc.ring import (
    BOUND,
    DEFAULT_FRAC_BITS,
    EncodingError,
    decode_fixed,
    decode_int,
    encode_fixed,
    encode_int,
    random_ring,
    reconstruct,
    split,
)

LARGEST = 2**62 - 1
EDGE_INTS = [0, 1, -1, LARGEST, -LARGEST]
ring_ints = st.integers(-LARGEST, LARGEST)
ring_words = st.integers(0, 2**64 - 1)


# -- integers ---------------------------------------------------------------------------


def test_encode_int_is_twos_complement() -> None:
    encoded = encode_int(EDGE_INTS)
    assert encoded.dtype == np.uint64
    expected = np.array([0, 1, 2**64 - 1, LARGEST, 2**64 - LARGEST], dtype=np.uint64)
    np.testing.assert_array_equal(encoded, expected)
    np.testing.assert_array_equal(decode_int(encoded), np.array(EDGE_INTS, dtype=np.int64))


@pytest.mark.parametrize(
    "values",
    [
        np.array(EDGE_INTS, dtype=np.int64),
        np.array([0, 1, 2, 255], dtype=np.uint8),
        np.array([-(2**31), 2**31 - 1], dtype=np.int32),
        np.array([0, LARGEST], dtype=np.uint64),
        np.array([True, False, True]),
        np.array([-3.0, 0.0, 2.0**52]),
        np.array(EDGE_INTS, dtype=object),
        np.zeros((2, 3), dtype=np.int64),
        np.array([], dtype=np.int64),
        np.array([], dtype=np.float64),
        np.int64(-7),
    ],
    ids=[
        "int64",
        "uint8",
        "int32",
        "uint64",
        "bool",
        "integral-floats",
        "object",
        "2d",
        "empty",
        "empty-float",
        "scalar",
    ],
)
def test_encode_int_accepts_integer_like_dtypes(values: np.ndarray) -> None:
    encoded = encode_int(values)
    assert encoded.shape == np.shape(values)
    expected = np.asarray(values).astype(object).astype(np.int64) if np.size(values) else values
    np.testing.assert_array_equal(decode_int(encoded), np.asarray(expected, dtype=np.int64))


@pytest.mark.parametrize(
    "value",
    [
        2**62,
        -(2**62),
        2**63 - 1,
        -(2**63),
        2**63,
        2**64,
        -(2**64),
        2**200,
        np.uint64(2**62),
        np.uint64(2**64 - 1),
        float(2**62),
        -float(2**62),
        1e300,
    ],
)
def test_encode_int_refuses_values_outside_the_range(value: object) -> None:
    with pytest.raises(EncodingError, match="outside"):
        encode_int([value])


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_encode_int_refuses_nan_and_infinity(value: float) -> None:
    with pytest.raises(EncodingError, match="NaN or infinity"):
        encode_int([1.0, value])


def test_encode_int_refuses_fractions_and_strings() -> None:
    with pytest.raises(EncodingError, match="non-integral"):
        encode_int([1.0, 2.5])
    with pytest.raises(EncodingError, match="dtype"):
        encode_int(["1", "2"])


def test_encode_int_refuses_fractions_in_object_arrays() -> None:
    """An object column (as pandas produces for mixed data) must not be silently truncated."""
    with pytest.raises(EncodingError):
        encode_int(np.array([1, 0.5], dtype=object))


def test_encode_int_refuses_nan_in_object_arrays() -> None:
    """NaN in an object column is an EncodingError like NaN in a float column."""
    with pytest.raises(EncodingError):
        encode_int(np.array([1, math.nan], dtype=object))


@given(st.lists(ring_ints, max_size=50))
@example(EDGE_INTS)
@example([])
def test_int_encoding_roundtrip(values: list[int]) -> None:
    encoded = encode_int(np.array(values, dtype=np.int64))
    np.testing.assert_array_equal(decode_int(encoded), np.array(values, dtype=np.int64))
    np.testing.assert_array_equal(encode_int(values), encoded)


@given(st.integers(min_value=2**62, max_value=2**130), st.booleans())
@example(2**62, True)
@example(2**62, False)
def test_every_out_of_range_int_is_refused(magnitude: int, negative: bool) -> None:
    with pytest.raises(EncodingError):
        encode_int([-magnitude if negative else magnitude])


# -- fixed point ------------------------------------------------------------------------


def test_encode_fixed_scales_and_rounds() -> None:
    encoded = encode_fixed([0.0, 1.0, -1.0, 0.5, -2.25, 1.0 / 3.0])
    scale = 1 << DEFAULT_FRAC_BITS
    expected = np.array([0, scale, -scale, scale // 2, -9 * scale // 4, round(scale / 3)])
    np.testing.assert_array_equal(decode_int(encoded), expected)
    np.testing.assert_array_equal(
        decode_fixed(encoded), [0.0, 1.0, -1.0, 0.5, -2.25, round(scale / 3) / scale]
    )


@pytest.mark.parametrize("frac_bits", [0, 8, 16, 30])
def test_encode_fixed_bound_depends_on_fractional_bits(frac_bits: int) -> None:
    limit = 2.0 ** (62 - frac_bits)
    inside = limit - 2.0 ** (62 - frac_bits - 40)
    np.testing.assert_allclose(
        decode_fixed(encode_fixed([inside, -inside], frac_bits), frac_bits), [inside, -inside]
    )
    for value in (limit, -limit, 2 * limit):
        with pytest.raises(EncodingError, match="outside"):
            encode_fixed([value], frac_bits)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_encode_fixed_refuses_nan_and_infinity(value: float) -> None:
    with pytest.raises(EncodingError, match="NaN or infinity"):
        encode_fixed([0.5, value])


@st.composite
def fixed_columns(draw: st.DrawFn) -> tuple[list[float], int]:
    """A fractional-bit count and reals that fit with it (magnitude below 2^(61 - frac_bits))."""
    frac_bits = draw(st.sampled_from([1, 8, 16, 24]))
    limit = 2.0 ** (61 - frac_bits)
    reals = st.floats(-limit, limit, allow_nan=False, allow_infinity=False)
    return draw(st.lists(reals, max_size=50)), frac_bits


@given(fixed_columns())
@example(([0.0, 1.0, -1.0, 2.0**-17, -(2.0**-17), 2.0**45, -(2.0**45)], 16))
@example(([], 16))
def test_fixed_encoding_roundtrip_within_half_an_ulp(column: tuple[list[float], int]) -> None:
    values, frac_bits = column
    decoded = decode_fixed(encode_fixed(values, frac_bits), frac_bits)
    reference = np.round(np.array(values, dtype=np.float64) * 2.0**frac_bits) / 2.0**frac_bits
    np.testing.assert_array_equal(decoded, reference)
    assert np.all(np.abs(decoded - np.array(values)) <= 2.0 ** -(frac_bits + 1))


# -- sharing ----------------------------------------------------------------------------


@pytest.mark.parametrize("parties", [1, 2, 3, 5])
@pytest.mark.parametrize("seeded", [True, False], ids=["seeded", "os-random"])
def test_split_reconstruct_roundtrip(parties: int, seeded: bool) -> None:
    rng = np.random.default_rng(7) if seeded else None
    secret = encode_int(np.array([*EDGE_INTS, 12345, -67890], dtype=np.int64))
    shares = split(secret, parties, rng)
    assert len(shares) == parties
    assert all(share.dtype == np.uint64 and share.shape == secret.shape for share in shares)
    np.testing.assert_array_equal(reconstruct(shares), secret)
    if parties > 1:
        # fewer than all shares say nothing; here simply: no share is the secret itself
        assert not any(np.array_equal(share, secret) for share in shares[:-1])


def test_split_is_deterministic_with_a_seeded_generator() -> None:
    secret = encode_int(np.arange(-5, 5))
    first = split(secret, 3, np.random.default_rng(42))
    second = split(secret, 3, np.random.default_rng(42))
    for left, right in zip(first, second, strict=True):
        np.testing.assert_array_equal(left, right)


def test_split_handles_shapes_and_empty_inputs() -> None:
    for secret in (
        np.zeros(0, np.uint64),
        np.arange(6, dtype=np.uint64).reshape(2, 3),
        np.array(5, dtype=np.uint64),
    ):
        shares = split(secret, 3)
        np.testing.assert_array_equal(reconstruct(shares), secret)


def test_split_needs_a_party() -> None:
    with pytest.raises(ValueError):
        split(encode_int([1]), 0)


@given(st.lists(ring_words, max_size=40), st.integers(1, 6), st.integers(0, 2**32))
@example([0, 1, 2**64 - 1, 2**62 - 1, 2**64 - 2**62 + 1], 5, 0)
@example([], 2, 0)
def test_reconstruct_inverts_split(words: list[int], parties: int, seed: int) -> None:
    secret = np.array(words, dtype=np.uint64)
    shares = split(secret, parties, np.random.default_rng(seed))
    np.testing.assert_array_equal(reconstruct(shares), secret)


def test_random_ring_shapes() -> None:
    assert random_ring(0).shape == (0,)
    assert random_ring((3, 4)).shape == (3, 4)
    assert random_ring((2, 5), np.random.default_rng(1)).dtype == np.uint64
    # 2000 OS-random words: every bit position is set in some and clear in others
    words = random_ring(2000)
    for position in range(64):
        ones = int(np.count_nonzero((words >> np.uint64(position)) & np.uint64(1)))
        assert 800 < ones < 1200


def test_bound_constant() -> None:
    assert BOUND == 2**62
