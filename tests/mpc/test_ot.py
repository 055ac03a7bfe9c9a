"""Tests for the ``ot`` generator: relations by reconstruction, uniformity, malformed peers."""

from __future__ import annotations

import platform
from collections.abc import Callable
from functools import reduce
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tally.common.prf import AesCtrPrf
from tally.mpc.bits import from_planes, unpack_lanes
from tally.mpc.offline.ot import (
    ModpGroup,
    OtError,
    OtGenerator,
    keep_freed_buffers,
    transpose_bits,
)
from tally.mpc.simulate import run_transports
from tally.mpc.transport import Transport
from tally.mpc.tuples import HelperShare, PermuterShare
from tally.tuples.ot_group import Ed25519Group
from tally.tuples.ot_hash import AesBlockHash

TIMEOUT = 60.0


def run(program: Callable[[OtGenerator], Any], parties: int) -> list[Any]:
    """``program`` at every party over its own ``ot`` generator; the first error re-raised."""
    return run_transports(
        parties,
        lambda transport: program(
            OtGenerator(transport, AesCtrPrf(), AesBlockHash(), group=Ed25519Group())
        ),
        TIMEOUT,
    )


def xor(shares: list[np.ndarray]) -> np.ndarray:
    return reduce(np.bitwise_xor, shares)


def test_transpose_matches_numpy() -> None:
    rng = np.random.default_rng(1)
    bitmatrix = rng.integers(0, 2, size=(128, 200), dtype=np.uint8)
    packed = np.packbits(bitmatrix, axis=1, bitorder="little")
    rows = transpose_bits(packed, 200)
    assert np.array_equal(np.unpackbits(rows, axis=1, bitorder="little"), bitmatrix.T)


def test_transpose_of_many_word_slices() -> None:
    """More OTs than one 1 MB slice of the transpose, and a count that is no multiple of 64."""
    rng = np.random.default_rng(2)
    m = 64 * 1024 * 2 + 40
    bitmatrix = rng.integers(0, 2, size=(128, m), dtype=np.uint8)
    packed = np.packbits(bitmatrix, axis=1, bitorder="little")
    rows = transpose_bits(packed, m)
    assert rows.shape == (m, 16)
    assert np.array_equal(np.unpackbits(rows, axis=1, bitorder="little"), bitmatrix.T)


def test_keep_freed_buffers_is_accepted_by_glibc() -> None:
    assert keep_freed_buffers() == (platform.libc_ver()[0] == "glibc")


@pytest.mark.parametrize("parties", [2, 3, 5])
def test_every_kind_reconstructs(parties: int) -> None:
    def program(g: OtGenerator) -> Any:
        return (
            g.triples(b"t", 300),
            g.bit_triples(b"b", 5),
            g.dabits(b"d", 130),
            g.edabits(b"e", 70, 12),
            g.edabits(b"f", 10, 64),
            g.input_masks(b"m", 4),
        )

    out = run(program, parties)
    a, b, c = (sum(o[0][k] for o in out) for k in range(3))
    assert np.array_equal(a * b, c)
    assert len(np.unique(a)) > 290  # random, not constant
    xa, xb, xc = (xor([o[1][k] for o in out]) for k in range(3))
    assert np.array_equal(xa & xb, xc)
    assert xa.any()
    arith = sum(o[2][0] for o in out)
    binary = unpack_lanes(xor([o[2][1] for o in out]), 130).astype(np.uint64)
    assert set(arith.tolist()) <= {0, 1}
    assert np.array_equal(arith, binary)
    assert 20 < int(arith.sum()) < 110
    for index, count, width in ((3, 70, 12), (4, 10, 64)):
        value = sum(o[index][0] for o in out)
        planes = xor([o[index][1] for o in out])
        assert planes.shape[0] == width
        assert np.array_equal(value, from_planes(planes, count))
        if width < 64:
            assert int(value.max()) < 2**width
    assert out[0][5].shape == (4,)


def test_messages_a_party_receives_are_uniform() -> None:
    """Chi-square over byte values of the u columns and the Gilboa corrections party 1 gets."""
    seen: list[np.ndarray] = []

    def program(transport: Transport) -> Any:
        if transport.party == 1:
            original = transport._exchange  # type: ignore[attr-defined]

            def recording(outgoing: Any, expect: list[int]) -> Any:
                received = original(outgoing, expect)
                for arrays in received.values():
                    seen.extend(np.ascontiguousarray(a) for a in arrays)
                return received

            transport._exchange = recording  # type: ignore[attr-defined]
        return OtGenerator(transport, AesCtrPrf(), AesBlockHash(), group=Ed25519Group()).triples(
            b"t", 64
        )

    run_transports(2, program, TIMEOUT)
    u_columns = seen[2]  # after the two base-OT messages
    assert u_columns.shape == (128, 512)
    corrections = np.concatenate([a.view(np.uint8).reshape(-1) for a in seen[3:]])
    for data in (u_columns.reshape(-1), corrections):
        counts = np.bincount(data, minlength=256)
        expected = data.size / 256
        chi2 = float(((counts - expected) ** 2 / expected).sum())
        assert chi2 < 350  # 255 degrees of freedom: p about 1e-4


@pytest.mark.parametrize(
    ("short_round", "reason"),
    [
        (1, "party 0 sent a malformed base-OT key"),
        (2, "party 0 sent a malformed base-OT choices"),
        (3, "party 0 sent a malformed OT extension matrix"),
        (4, "party 0 sent a malformed OLE corrections"),
    ],
)
def test_short_ot_message_fails_cleanly(short_round: int, reason: str) -> None:
    def program(transport: Transport) -> Any:
        if transport.party == 0:  # one element short in every array of one round
            honest = transport._exchange  # type: ignore[attr-defined]

            def truncating(outgoing: Any, expect: list[int]) -> Any:
                if transport.rounds == short_round:
                    outgoing = {p: [a[..., :-1] for a in arrays] for p, arrays in outgoing.items()}
                return honest(outgoing, expect)

            transport._exchange = truncating  # type: ignore[attr-defined]
        return OtGenerator(transport, AesCtrPrf(), AesBlockHash(), group=Ed25519Group()).triples(
            b"t", 16
        )

    with pytest.raises(OtError, match=reason):
        run_transports(2, program, TIMEOUT)


def check_shuffle(out: list[Any], rows: int, kinds: str) -> None:
    """Every permuter's Delta = pi(sum of the helpers' masks) + sum of their outputs."""
    parties = len(out)
    xor = np.array([kind == "x" for kind in kinds], dtype=bool)
    for step in range(parties):
        permuter = out[step][step]
        assert isinstance(permuter, PermuterShare)
        assert sorted(permuter.permutation.tolist()) == list(range(rows))
        masks = np.zeros((rows, len(kinds)), dtype=np.uint64)
        outputs = masks.copy()
        for helper in (out[p][step] for p in range(parties) if p != step):
            assert isinstance(helper, HelperShare)
            masks = np.where(xor, masks ^ helper.mask, masks + helper.mask)
            outputs = np.where(xor, outputs ^ helper.output, outputs + helper.output)
        moved = masks[permuter.permutation]
        np.testing.assert_array_equal(
            permuter.delta, np.where(xor, moved ^ outputs, moved + outputs)
        )


@pytest.mark.parametrize("parties", [2, 3, 5])
def test_shuffle_correlations_reconstruct(parties: int) -> None:
    shapes = [(0, "ax"), (1, "a"), (2, "x"), (3, "ax"), (30, "xxa"), (257, "ax"), (5, "")]
    if parties == 5:
        shapes = [(0, "a"), (3, "ax"), (40, "xa")]
    out = run(lambda g: [g.shuffle(b"s%d" % i, r, k) for i, (r, k) in enumerate(shapes)], parties)
    for index, (rows, kinds) in enumerate(shapes):
        check_shuffle([o[index] for o in out], rows, kinds)
    permutations = [o[-1][o_index].permutation for o_index, o in enumerate(out)]
    if parties == 2:  # fresh, uniform-looking permutations (not the identity)
        big = [o[5][i].permutation for i, o in enumerate(out)]
        assert all(not np.array_equal(p, np.arange(257)) for p in big)
        assert not np.array_equal(big[0], big[1])
    assert all(len(p) == shapes[-1][0] for p in permutations)


def test_switch_corrections_are_uniform_and_short_ones_fail_cleanly() -> None:
    seen: list[np.ndarray] = []

    def program(transport: Transport) -> Any:
        original = transport._exchange  # type: ignore[attr-defined]

        def recording(outgoing: Any, expect: list[int]) -> Any:
            received = original(outgoing, expect)
            if transport.party == 1 and transport.rounds == 4:  # the switch corrections
                seen.extend(np.ascontiguousarray(a) for a in received[0])
            return received

        transport._exchange = recording  # type: ignore[attr-defined]
        return OtGenerator(transport, AesCtrPrf(), AesBlockHash(), group=Ed25519Group()).shuffle(
            b"s", 500, "ax"
        )

    run_transports(2, program, TIMEOUT)
    (corrections,) = seen
    data = corrections.view(np.uint8).reshape(-1)
    counts = np.bincount(data, minlength=256)
    expected = data.size / 256
    assert float(((counts - expected) ** 2 / expected).sum()) < 350

    def short(transport: Transport) -> Any:
        if transport.party == 0:
            honest = transport._exchange  # type: ignore[attr-defined]

            def truncating(outgoing: Any, expect: list[int]) -> Any:
                if transport.rounds == 4:
                    outgoing = {p: [a[:-1] for a in arrays] for p, arrays in outgoing.items()}
                return honest(outgoing, expect)

            transport._exchange = truncating  # type: ignore[attr-defined]
        return OtGenerator(transport, AesCtrPrf(), AesBlockHash(), group=Ed25519Group()).shuffle(
            b"s", 50, "a"
        )

    with pytest.raises(OtError, match="party 0 sent a malformed switch corrections"):
        run_transports(2, short, TIMEOUT)


@pytest.mark.parametrize("parties", [2, 3])
def test_engine_protocols_on_ot_tuples(parties: int) -> None:
    from tests.mpc.test_shuffle import (
        assert_is_row_permutation,
        reconstruct_columns,
        share_columns,
    )

    from tally.mpc.arithmetic import multiply
    from tally.mpc.compare import equal, less_than_zero
    from tally.mpc.offline.ot import OtSource
    from tally.mpc.party import Party
    from tally.mpc.ring import decode_int, encode_int, reconstruct, split
    from tally.mpc.shuffle import shuffle_columns

    rng = np.random.default_rng(3)
    x = rng.integers(-(2**40), 2**40, 100)
    y = rng.integers(-(2**20), 2**20, 100)
    y[:10] = x[:10]
    xs, ys = split(encode_int(x), parties, rng), split(encode_int(y), parties, rng)

    table = np.stack([np.arange(100, dtype=np.uint64), encode_int(x)], axis=1)
    columns = share_columns(table, "ax", parties)

    def program(g: OtGenerator) -> Any:
        party = Party(g.party, g.transport, OtSource(g))
        (product,) = multiply(party, [(xs[g.party], ys[g.party])])
        return (
            product,
            less_than_zero(party, xs[g.party]),
            equal(party, xs[g.party], ys[g.party]),
            shuffle_columns(party, columns[g.party], "ax"),
        )

    out = run(program, parties)
    np.testing.assert_array_equal(decode_int(reconstruct([o[0] for o in out])), x * y)
    np.testing.assert_array_equal(reconstruct([o[1] for o in out]), (x < 0).astype(np.uint64))
    np.testing.assert_array_equal(reconstruct([o[2] for o in out]), (x == y).astype(np.uint64))
    shuffled = reconstruct_columns([o[3] for o in out], "ax")
    permutation = assert_is_row_permutation(shuffled, table)
    assert not np.array_equal(permutation, np.arange(100))


def test_a_group_by_end_to_end_on_ot_tuples() -> None:
    """Two parties, nothing trusted: sort-based group-by on ot tuples against pandas."""
    from tally.mpc.offline.ot import OtSource
    from tally.mpc.party import Party
    from tally.mpc.table import ColumnSpec, share_table, table_from_share_set

    rng = np.random.default_rng(5)
    frame = pd.DataFrame({"region": rng.integers(0, 6, 120), "views": rng.integers(-50, 90, 120)})
    specs = {"region": ColumnSpec("key", bits=3), "views": ColumnSpec("int")}
    shares = share_table(dict(frame.items()), specs, 2, rng=np.random.default_rng(6))

    def program(g: OtGenerator) -> Any:
        party = Party(g.party, g.transport, OtSource(g))
        table = table_from_share_set(party, shares[g.party], specs)
        grouped = table.group_by("region").agg(total=("views", "sum"), n=("views", "count"))
        return grouped.reveal()

    first, second = run(program, 2)
    expected = frame.groupby("region").agg(total=("views", "sum"), n=("views", "count"))
    for result in (first, second):
        got = pd.DataFrame(result).set_index("region").sort_index()
        np.testing.assert_array_equal(got["total"].to_numpy(), expected["total"].to_numpy())
        np.testing.assert_array_equal(got["n"].to_numpy(), expected["n"].to_numpy())
        np.testing.assert_array_equal(got.index.to_numpy(), expected.index.to_numpy())


def test_hash_is_the_tweakable_construction_block_by_block() -> None:
    """H(i, x) = pi(pi(x) ^ i) ^ pi(x), low 64 bits, against AES-128 one block at a time."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    from tally.tuples.ot_hash import FIXED_KEY

    def pi(block: bytes) -> bytes:
        encryptor = Cipher(algorithms.AES(FIXED_KEY), modes.ECB()).encryptor()
        return encryptor.update(block) + encryptor.finalize()

    rng = np.random.default_rng(4)
    blocks = rng.integers(0, 256, (5, 16), dtype=np.uint8)
    tweaks = np.array([0, 1, 7, 2**40, 2**64 - 1], dtype=np.uint64)
    before = blocks.copy()
    got = AesBlockHash().hash(blocks, tweaks)
    assert np.array_equal(blocks, before)  # the input is not overwritten
    for row, tweak, value in zip(blocks, tweaks, got, strict=True):
        first = pi(row.tobytes())
        tweaked = (int.from_bytes(first[:8], "little") ^ int(tweak)).to_bytes(8, "little")
        second = pi(tweaked + first[8:])
        expected = int.from_bytes(second[:8], "little") ^ int.from_bytes(first[:8], "little")
        assert int(value) == expected


@pytest.mark.parametrize("group", [ModpGroup(), Ed25519Group()], ids=["modp", "ed25519"])
def test_base_ots_in_either_group_and_elements_outside_it_are_refused(group: Any) -> None:
    def program(transport: Transport) -> Any:
        return OtGenerator(transport, AesCtrPrf(), AesBlockHash(), group=group).triples(b"t", 50)

    out = run_transports(2, program, TIMEOUT)
    a, b, c = (sum(o[k] for o in out) for k in range(3))
    np.testing.assert_array_equal(a * b, c)
    # the identity (small order, cofactor) or a non-element is refused before any use
    bad = b"\x01" + bytes(31) if isinstance(group, Ed25519Group) else bytes(group.element_bytes)
    assert not group.valid(bad)

    def lying(transport: Transport) -> Any:
        if transport.party == 0:
            honest = transport._exchange  # type: ignore[attr-defined]

            def swap(outgoing: Any, expect: list[int]) -> Any:
                if transport.rounds == 1:
                    outgoing = {p: [np.frombuffer(bad, np.uint8).copy()] for p in outgoing}
                return honest(outgoing, expect)

            transport._exchange = swap  # type: ignore[attr-defined]
        return OtGenerator(transport, AesCtrPrf(), AesBlockHash(), group=group)

    with pytest.raises(OtError, match="party 0 sent a base-OT key outside the group"):
        run_transports(2, lying, TIMEOUT)


def test_a_partys_view_does_not_depend_on_the_other_partys_secrets() -> None:
    """The simulator argument on small parameters: what party 1 receives while making
    triples (IKNP columns and Gilboa corrections) has the same distribution whether party
    0's a and b are all zero or random (two-sample chi-square on the bytes).  A simulator
    that knows only party 1's own input and output produces it: uniform bytes."""

    def view(fixed: bool, seed: int) -> np.ndarray:
        seen: list[np.ndarray] = []

        def program(transport: Transport) -> Any:
            generator = OtGenerator(transport, AesCtrPrf(), AesBlockHash(), group=Ed25519Group())
            if transport.party == 0 and fixed:  # party 0's secrets: zero instead of random
                generator._words = lambda label, count: np.zeros(count, np.uint64)  # type: ignore[method-assign]
            if transport.party == 1:
                original = transport._exchange  # type: ignore[attr-defined]

                def recording(outgoing: Any, expect: list[int]) -> Any:
                    received = original(outgoing, expect)
                    if transport.rounds > 2:  # after the base OTs
                        seen.extend(
                            np.ascontiguousarray(a).view(np.uint8).reshape(-1) for a in received[0]
                        )
                    return received

                transport._exchange = recording  # type: ignore[attr-defined]
            return generator.triples(b"t%d" % seed, 256)

        out = run_transports(2, program, TIMEOUT)
        a, b, c = (sum(o[k] for o in out) for k in range(3))
        np.testing.assert_array_equal(a * b, c)  # the relation holds in both worlds
        return np.concatenate(seen)

    real = np.concatenate([view(False, seed) for seed in range(3)])
    zeroed = np.concatenate([view(True, seed) for seed in range(3)])
    counts = np.stack([np.bincount(real, minlength=256), np.bincount(zeroed, minlength=256)])
    expected = counts.sum(axis=0) * counts.sum(axis=1)[:, None] / counts.sum()
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 350  # 255 degrees of freedom: p about 1e-4
    # and a simulator's uniform bytes against the real view
    simulated = np.random.default_rng(1).integers(0, 256, real.size, dtype=np.uint8)
    counts = np.stack([np.bincount(real, minlength=256), np.bincount(simulated, minlength=256)])
    expected = counts.sum(axis=0) * counts.sum(axis=1)[:, None] / counts.sum()
    assert float(((counts - expected) ** 2 / expected).sum()) < 350
