"""The replicated (honest-majority, three-party) online path against numpy and pandas.

Every protocol that changes on this path (products, ANDs, sign, equality, bit
decomposition, bounded comparison, bit conversion) and every operator above them
(sorts both ways, group-by with every function, DP, relational filters and joins)
runs with ``replicated=True`` and is checked against plain numpy/pandas; the
additive path is what the other test modules run.  Also: no triple, bit triple,
daBit or edaBit is asked for, and what a party receives is uniform whatever the
sharing of the input was.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pytest
from tests.mpc.tables import run_frame_at_every_party
from tests.mpc.test_groupby import (
    ALL_FUNCTIONS,
    SPECS,
    assert_matches,
    assert_same_output,
    expected_groupby,
    group_all,
    make_frame,
)
from tests.mpc.test_offline_engine import check, engine_program, make_inputs, share_inputs
from tests.mpc.test_relational import join_case, run_two_tables
from tests.mpc.test_sort import assert_frame_equal, expected_sort, run_on_table, sorted_by

from tally.mpc import bits
from tally.mpc.arithmetic import multiply
from tally.mpc.boolean import and_words
from tally.mpc.compare import (
    bit_decompose,
    bits_to_arithmetic,
    equal,
    less_than_bounded,
    less_than_words,
    less_than_zero,
)
from tally.mpc.dp import DP
from tally.mpc.offline import Hm3Source
from tally.mpc.offline.prf import ShakePrf
from tally.mpc.party import Party
from tally.mpc.relational import filter_rows, pk_fk_join
from tally.mpc.replicated import Replicated
from tally.mpc.ring import Shares, encode_int, reconstruct, split
from tally.mpc.simulate import run_parties, run_transports
from tally.mpc.table import SecretTable
from tally.mpc.transport import Message, Transport
from tally.mpc.tuples import Dealer

LARGEST = 2**62 - 1
TIMEOUT = 60.0


def signed(rows: int, seed: int) -> np.ndarray:
    """Edge values, then wide and small signed values in (-2^62, 2^62)."""
    rng = np.random.default_rng(seed)
    edges = [0, 1, -1, LARGEST, -LARGEST, 2**61, -(2**61)]
    wide = rng.integers(-LARGEST, LARGEST, size=rows // 2, endpoint=True)
    small = rng.integers(-3, 4, size=rows - rows // 2)
    return np.concatenate([edges, wide, small]).astype(np.int64)


def shared(values: np.ndarray, seed: int = 0) -> list[Shares]:
    return split(encode_int(values), 3, np.random.default_rng(seed))


def xor_split(secret: Shares, seed: int) -> list[Shares]:
    rng = np.random.default_rng(seed)
    first, second = (rng.integers(0, 2**64, secret.shape, dtype=np.uint64) for _ in range(2))
    return [first, second, secret ^ first ^ second]


def xor_of(results: Sequence[Shares]) -> Shares:
    combined: Shares = np.bitwise_xor.reduce(np.stack(list(results)), axis=0)
    return combined


def on_replicated(program: Callable[[Party], Any], dealer: Dealer | None = None) -> list[Any]:
    return run_parties(3, program, seed=5, timeout=TIMEOUT, dealer=dealer, replicated=True)


class NoCorrelations(Dealer):
    """A dealer whose parties refuse every tuple the replicated path must not need."""

    def __init__(self) -> None:
        super().__init__(3, seed=9)
        self.kinds: list[str] = []

    def take(self, party: int, batch: int, kind: str, params: tuple[int | str, ...]) -> object:
        if kind in ("triples", "bit_triples", "dabits", "edabits"):
            raise AssertionError(f"the replicated path asked for {kind}")
        self.kinds.append(kind)
        return super().take(party, batch, kind, params)


# -- protocols --------------------------------------------------------------------------------


def test_products_and_ands_match_numpy_without_triples() -> None:
    x, y = signed(500, 1), signed(500, 2)
    words = np.random.default_rng(3).integers(0, 2**64, size=(2, 40), dtype=np.uint64)
    xs, ys = shared(x, 1), shared(y, 2)
    wx, wy = (xor_split(w, 4) for w in words)

    def program(party: Party) -> tuple[Shares, Shares]:
        (product,) = multiply(party, [(xs[party.id], ys[party.id])])
        (conjunction,) = and_words(party, [(wx[party.id], wy[party.id])])
        return product, conjunction

    results = on_replicated(program, NoCorrelations())
    np.testing.assert_array_equal(
        reconstruct([r[0] for r in results]), x.view(np.uint64) * y.view(np.uint64)
    )
    np.testing.assert_array_equal(xor_of([r[1] for r in results]), words[0] & words[1])


def test_sign_equality_and_bounded_comparison_match_numpy() -> None:
    x, y = signed(600, 5), signed(600, 6)
    y[:150] = x[:150]
    small_x = np.random.default_rng(7).integers(0, 2**20, 600)
    small_y = small_x.copy()
    small_y[::3] += np.random.default_rng(8).integers(-5, 6, 200)
    small_y = np.clip(small_y, 0, 2**20 - 1)
    xs, ys, sx, sy = shared(x, 1), shared(y, 2), shared(small_x, 3), shared(small_y, 4)

    def program(party: Party) -> dict[str, Shares]:
        me = party.id
        return {
            "ltz": less_than_zero(party, xs[me]),
            "eq": equal(party, xs[me], ys[me]),
            "eq21": equal(party, sx[me], sy[me], width=21),
            "lt": less_than_bounded(party, sx[me], sy[me], 20),
        }

    results = on_replicated(program, NoCorrelations())
    got = {k: reconstruct([r[k] for r in results]) for k in ("ltz", "eq", "eq21")}
    np.testing.assert_array_equal(got["ltz"], (x < 0).astype(np.uint64))
    np.testing.assert_array_equal(got["eq"], (x == y).astype(np.uint64))
    np.testing.assert_array_equal(got["eq21"], (small_x == small_y).astype(np.uint64))
    lanes = bits.unpack_lanes(xor_of([r["lt"] for r in results]), 600)
    np.testing.assert_array_equal(lanes, (small_x < small_y).astype(np.uint8))


@pytest.mark.parametrize("width", [1, 7, 33, 64])
def test_bit_decomposition_and_conversion_match_numpy(width: int) -> None:
    x = signed(300, width)
    rows = x.size
    xs = shared(x, 9)
    low = x.view(np.uint64) & np.uint64((1 << width) - 1 if width < 64 else 2**64 - 1)

    def program(party: Party) -> tuple[Shares, Shares]:
        planes = bit_decompose(party, xs[party.id], width)
        return planes, bits_to_arithmetic(party, planes, rows)

    results = on_replicated(program, NoCorrelations())
    planes = xor_of([r[0] for r in results])
    np.testing.assert_array_equal(bits.from_planes(planes, rows), low)
    arithmetic = reconstruct([r[1] for r in results])
    expected = (low[None, :] >> np.arange(width, dtype=np.uint64)[:, None]) & np.uint64(1)
    np.testing.assert_array_equal(arithmetic, expected)


def test_less_than_words_and_an_empty_input() -> None:
    rng = np.random.default_rng(12)
    left, right = rng.integers(0, 2**40, 130), rng.integers(0, 2**40, 130)
    right[:30] = left[:30]
    lp, rp = (xor_split(bits.to_planes(v.astype(np.uint64), 40), 13) for v in (left, right))
    empty = shared(np.zeros(0, np.int64))

    def program(party: Party) -> tuple[Shares, Shares, Shares]:
        me = party.id
        return (
            less_than_words(party, lp[me], rp[me]),
            less_than_zero(party, empty[me]),
            equal(party, empty[me], empty[me]),
        )

    results = on_replicated(program, NoCorrelations())
    lanes = bits.unpack_lanes(xor_of([r[0] for r in results]), 130)
    np.testing.assert_array_equal(lanes, (left < right).astype(np.uint8))
    assert all(r[1].size == 0 and r[2].size == 0 for r in results)


def test_the_whole_engine_on_hm3_shuffles_and_replicated_products() -> None:
    """test_offline_engine's program: products, sign, equality, shuffle and a group-by."""
    inputs = make_inputs(seed=21)
    shares = share_inputs(inputs)
    asked: list[list[tuple[str, Any]]] = []

    def program(transport: Transport) -> dict[str, Any]:
        source = Hm3Source(transport)
        party = Party(transport.party, transport, source, Replicated.agree(transport, ShakePrf()))
        result = engine_program(party, shares[transport.party])
        asked.append(source.requests)
        return result

    check(run_transports(3, program, TIMEOUT), inputs)
    assert {kind for requests in asked for kind, _ in requests} == {"shuffle"}


# -- operators ---------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["quick", "radix"])
def test_group_by_every_function_through_either_sort(
    method: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tally.mpc.sorting as sorting

    monkeypatch.setattr(sorting, "choose_sort", lambda widths, rows: method)
    frame = make_frame(200, regions=7, seed=31)
    valid = (np.random.default_rng(31).random(200) < 0.7).astype(int)

    dealer = NoCorrelations()
    got = run_group_by(frame, group_all("region", ALL_FUNCTIONS, max_groups=9), valid, dealer)

    assert set(dealer.kinds) == {"shuffle"}
    assert_matches(got, expected_groupby(frame, ["region"], ALL_FUNCTIONS, valid))


def run_group_by(
    frame: pd.DataFrame,
    program: Callable[[SecretTable], Any],
    valid: Any = None,
    dealer: Dealer | None = None,
) -> Any:
    results = run_frame_at_every_party(
        *(3, frame, SPECS, program),
        valid=valid,
        seed=5,
        timeout=TIMEOUT,
        replicated=True,
        dealer=dealer,
    )
    for other in results[1:]:
        assert_same_output(other, results[0])
    return results[0]


@pytest.mark.parametrize("descending", [False, True])
def test_sort_by_matches_pandas(descending: bool) -> None:
    from tests.mpc.test_sort import SPECS as SORT_SPECS
    from tests.mpc.test_sort import make_frame as sort_frame

    frame = sort_frame(200, regions=6, seed=41)

    got = run_on_table(
        3, frame, SORT_SPECS, sorted_by(["region", "views"], descending), replicated=True
    )

    assert_frame_equal(got, expected_sort(frame, ["region", "views"], descending))


def test_group_by_under_dp_adds_noise_of_the_right_scale_only() -> None:
    frame = make_frame(300, regions=5, seed=43)

    def program(table: SecretTable) -> dict[str, np.ndarray]:
        grouped = table.group_by("region", domain=list(range(5)))
        return grouped.agg(dp=DP(epsilon=10.0, delta=1e-6), n=("views", "count")).reveal()

    got = run_group_by(frame, program)

    expected = frame.groupby("region").size().reindex(range(5), fill_value=0).to_numpy()
    assert list(got["region"]) == list(range(5))
    assert np.all(np.abs(got["n"] - expected) <= 8)  # epsilon 10: binomial noise of a few units


def test_filter_then_join_then_group_by_match_pandas() -> None:
    left, right = join_case("some")

    def program(users: SecretTable, views: SecretTable) -> dict[str, Any]:
        joined = pk_fk_join(users, views, "user")
        kept = filter_rows(joined, joined["amount"] > 100)
        return kept.group_by("campaign").agg(total=("amount", "sum")).reveal()

    results = run_two_tables(3, left, right, program, replicated=True)

    merged = right.merge(left, on="user", how="inner")
    expected = (
        merged[merged.amount > 100].groupby("campaign", as_index=False).agg(total=("amount", "sum"))
    )
    for result in results:
        got = pd.DataFrame(result).sort_values("campaign").reset_index(drop=True)
        pd.testing.assert_frame_equal(got, expected, check_dtype=False)


# -- what a party receives -------------------------------------------------------------------


class Recording(Transport):
    """Wraps a transport and keeps every array this party received."""

    def __init__(self, inner: Transport) -> None:
        super().__init__(inner.party, inner.parties)
        self.inner = inner
        self.received: list[np.ndarray] = []

    def _exchange(self, outgoing: Mapping[int, Message], expect: list[int]) -> Any:
        got = self.inner.exchange(outgoing, expect)
        for arrays in got.values():
            self.received.extend(np.asarray(a) for a in arrays)
        return got


def test_a_trivially_shared_secret_reaches_no_one_in_the_clear() -> None:
    """P0 alone holds v (shares (v, 0, 0)); what P1 and P2 receive is uniform bytes."""
    secret = np.full(1 << 14, 0x0123456789ABCDEF, dtype=np.uint64)
    views: dict[int, list[np.ndarray]] = {}

    def program(transport: Transport) -> Shares:
        recording = Recording(transport)
        party = Party(
            transport.party,
            recording,
            Dealer(3, seed=1).source(transport.party),
            Replicated.agree(recording, ShakePrf()),
        )
        mine = secret if party.id == 0 else np.zeros_like(secret)
        (square,) = multiply(party, [(mine, mine)])
        negative = less_than_zero(party, mine)
        views[party.id] = recording.received[1:]  # after the 16-byte key
        return square + negative

    run_transports(3, program, TIMEOUT)
    for receiver in (1, 2):
        data = np.concatenate([a.view(np.uint8).ravel() for a in views[receiver]])
        counts = np.bincount(data, minlength=256)
        expected = data.size / 256
        chi2 = float(((counts - expected) ** 2 / expected).sum())
        assert chi2 < 350, f"party {receiver} sees structure"  # 255 d.o.f.: p about 1e-4
        assert not np.isin(secret[:1].view(np.uint8), data[:8]).all()


def test_keys_stay_out_of_the_repr() -> None:
    def program(transport: Transport) -> str:
        context = Replicated.agree(transport, ShakePrf())
        return repr(context) + repr(context.keys)

    for text in run_transports(3, program, TIMEOUT):
        assert "own" not in text and "b'" not in text


def test_the_replicated_path_refuses_other_party_counts() -> None:
    from tally.mpc.offline.replicated import SetupError

    with pytest.raises(SetupError, match="exactly 3 parties"):
        run_transports(2, lambda transport: Replicated.agree(transport, ShakePrf()), TIMEOUT)
