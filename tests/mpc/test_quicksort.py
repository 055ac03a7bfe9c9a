"""Tests for tally.mpc.quicksort and tally.mpc.sorting: quicksort vs numpy, chooser vs docs."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from tests.mpc.test_sort import SPECS, assert_frame_equal, expected_sort, make_frame, run_on_table

from tally.mpc.party import Party
from tally.mpc.quicksort import ValueKey, comparison_budget, quicksort, tree_gates
from tally.mpc.ring import Shares, reconstruct, split
from tally.mpc.simulate import run_parties
from tally.mpc.sorting import choose_sort, sort_rows
from tally.mpc.table import SecretTable
from tally.mpc.tuples import Dealer

COMPARATORS = pytest.mark.parametrize("comparator", ["arithmetic", "boolean"])
ENGINE_NOTES = Path(__file__).resolve().parents[2] / "docs" / "engine.md"


def _quicksorted(
    parties: int,
    keys: Sequence[np.ndarray],
    widths: Sequence[int],
    descending: Sequence[bool],
    payload: np.ndarray,
    comparator: str | None = None,
    seed: int | None = 3,
    dealer: Dealer | None = None,
) -> np.ndarray:
    """Share keys and payload, quicksort at every party, return the reconstructed payload."""
    rng = np.random.default_rng(11)
    shared_keys = [split(k.astype(np.uint64), parties, rng) for k in keys]
    shared_payload = split(payload.astype(np.uint64), parties, rng)

    def program(party: Party) -> Shares:
        sort_keys = [
            ValueKey(s[party.id], w, d)
            for s, w, d in zip(shared_keys, widths, descending, strict=True)
        ]
        return quicksort(party, sort_keys, shared_payload[party.id], comparator=comparator)

    return reconstruct(run_parties(parties, program, seed=seed, dealer=dealer))


def _expected(keys: Sequence[np.ndarray], descending: Sequence[bool], widths: Sequence[int]):
    """Stable order by the keys, most significant first (np.lexsort takes the last as primary)."""
    columns = [
        ((1 << w) - 1 - k.astype(object)) if d else k.astype(object)
        for k, d, w in zip(keys, descending, widths, strict=True)
    ]
    as_int = [np.array([int(v) for v in c], dtype=np.float64) for c in columns]
    if max(widths) > 52:  # float64 cannot hold them: rank the exact values instead
        as_int = [np.unique(np.array(c), return_inverse=True)[1] for c in columns]
    return np.lexsort(as_int[::-1])


@pytest.mark.parametrize("parties", [2, 3])
@COMPARATORS
def test_quicksort_with_duplicates_and_mixed_directions(parties: int, comparator: str) -> None:
    rng = np.random.default_rng(parties)
    rows = 500
    keys = [rng.integers(0, 4, rows), rng.integers(0, 1 << 12, rows)]
    keys[1][::5] = 77  # ties in the second key too
    payload = np.stack([np.arange(rows), rng.integers(0, 1 << 40, rows)], axis=1)

    got = _quicksorted(parties, keys, [2, 12], [False, True], payload, comparator)

    np.testing.assert_array_equal(got, payload[_expected(keys, [False, True], [2, 12])])


@pytest.mark.parametrize("parties", [2, 3])
@pytest.mark.parametrize(
    "case", ["all-equal", "already-sorted", "reversed", "one-row", "two-rows", "no-rows"]
)
@COMPARATORS
def test_quicksort_edge_inputs(parties: int, case: str, comparator: str) -> None:
    rows = {"one-row": 1, "two-rows": 2, "no-rows": 0}.get(case, 300)
    keys = {
        "all-equal": np.full(rows, 9),
        "already-sorted": np.arange(rows) // 3,
        "reversed": (rows - np.arange(rows)) // 2,
    }.get(case, np.arange(rows)[::-1])
    payload = np.arange(rows).reshape(rows, 1)

    got = _quicksorted(parties, [keys], [9], [False], payload, comparator)

    np.testing.assert_array_equal(got.reshape(rows, 1), payload[np.argsort(keys, kind="stable")])


@pytest.mark.parametrize(("width", "comparator"), [(1, "arithmetic"), (1, "boolean"), (62, None)])
def test_quicksort_widths_1_and_62(width: int, comparator: str | None) -> None:
    rng = np.random.default_rng(width)
    rows = 400
    keys = [rng.integers(0, 1 << width, rows, dtype=np.uint64)]
    if width == 62:  # near the top of the range, with ties
        keys[0][::9] = np.uint64((1 << 62) - 1)
        keys[0][1::9] = np.uint64(0)
    payload = np.stack([np.arange(rows), rng.integers(0, 1 << 60, rows)], axis=1)

    for descending in (False, True):
        got = _quicksorted(3, keys, [width], [descending], payload, comparator)
        np.testing.assert_array_equal(got, payload[_expected(keys, [descending], [width])])


def test_quicksort_with_os_randomness_dealer() -> None:
    rng = np.random.default_rng(5)
    keys = [rng.integers(0, 50, 200)]
    payload = np.arange(200).reshape(200, 1)

    got = _quicksorted(3, keys, [6], [False], payload, seed=None)

    np.testing.assert_array_equal(got, payload[np.argsort(keys[0], kind="stable")])


def test_quicksort_refuses_the_arithmetic_comparator_beyond_62_bits() -> None:
    keys = [np.arange(10)]
    with pytest.raises(ValueError, match="at most 62 bits"):
        _quicksorted(2, keys, [60], [False], np.arange(10).reshape(10, 1), "arithmetic")


@pytest.mark.parametrize("comparator", ["arithmetic", "boolean"])
def test_tuple_requests_do_not_depend_on_the_shuffle(comparator: str) -> None:
    """Runs with different randomness ask for the same batches: the planned budget."""
    rows = 700
    keys = [np.random.default_rng(1).integers(0, 1 << 10, rows)]
    payload = np.arange(rows).reshape(rows, 1)
    plans = []
    for seed in (1, 2, 3):
        dealer = Dealer(2, seed=seed)
        _quicksorted(2, keys, [10], [False], payload, comparator, dealer=dealer)
        plans.append(dealer.requests)
    assert plans[0] == plans[1] == plans[2]
    after_shuffle = plans[0][[kind for kind, _ in plans[0]].index("shuffle") + 1 :]
    comparisons, levels = comparison_budget(rows)
    words = -(-comparisons // 64) + levels
    key_bits = 10 + 10  # key and index
    gates = tree_gates(key_bits) + (0 if comparator == "arithmetic" else key_bits)
    budget = [("bit_triples", (words * gates,))]
    if comparator == "arithmetic":
        budget.insert(0, ("edabits", (words * 64, key_bits + 1)))
    assert after_shuffle == budget


def test_a_quicksort_beyond_its_budget_asks_for_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """A budget too small for the run (forced here) is topped up, and the sort stays right."""
    import tally.mpc.quicksort as module

    rows = 300
    keys = [np.random.default_rng(4).integers(0, 1 << 8, rows)]
    payload = np.arange(rows).reshape(rows, 1)
    monkeypatch.setattr(module, "comparison_budget", lambda rows: (rows, 2))
    dealer = Dealer(2, seed=5)
    got = _quicksorted(2, keys, [8], [False], payload, dealer=dealer)
    np.testing.assert_array_equal(got, payload[np.argsort(keys[0], kind="stable")])
    after_shuffle = dealer.requests[[kind for kind, _ in dealer.requests].index("shuffle") + 1 :]
    assert len(after_shuffle) > 1 and len(set(after_shuffle[1:])) == 1


def test_traffic_follows_the_rank_permutation_not_the_keys() -> None:
    """One key value for all rows, or nine in sorted runs: the unique keys rank the rows
    alike, so with the same shuffle every opened bit, round and byte is the same."""
    rows = 300

    def traffic(keys: np.ndarray) -> list[tuple[int, int]]:
        shared = split(keys.astype(np.uint64), 3, np.random.default_rng(2))

        def program(party: Party) -> tuple[int, int]:
            key = ValueKey(shared[party.id], 4)
            quicksort(party, [key], shared[party.id].reshape(rows, 1))
            return party.transport.rounds, party.transport.bytes_sent

        return run_parties(3, program, seed=8)

    one_value = traffic(np.full(rows, 5))
    nine_runs = traffic(np.sort(np.random.default_rng(3).integers(0, 9, rows)))
    shuffled = traffic(np.random.default_rng(3).integers(0, 9, rows))
    assert one_value == nine_runs
    assert shuffled != one_value  # rounds do follow the ranks: the check above can fail


def test_tree_gates_counts_the_borrow_tree() -> None:
    # 3 positions: one pair (2 ANDs), then a last level of one pair (1 AND)
    assert [tree_gates(k) for k in (1, 2, 3, 4, 63)] == [0, 1, 3, 5, 123]


# -- through the table API ----------------------------------------------------------------------


def quick_sorted_by(keys: str | list[str], descending: bool = False):  # type: ignore[no-untyped-def]
    return lambda table: table.sort_by(keys, descending, method="quick").reveal()


@pytest.mark.parametrize("parties", [2, 3])
@pytest.mark.parametrize("descending", [False, True], ids=["ascending", "descending"])
def test_sort_by_quick_carries_every_column(parties: int, descending: bool) -> None:
    frame = make_frame(300, regions=5, seed=40 + parties)

    got = run_on_table(parties, frame, SPECS, quick_sorted_by(["region", "views"], descending))

    assert_frame_equal(got, expected_sort(frame, ["region", "views"], descending))


def test_sort_by_quick_on_a_key_wider_than_a_word() -> None:
    """A 63-bit int key (sort width 64) plus the index: the boolean comparator, two words."""
    frame = make_frame(200, regions=3, seed=43)
    frame["views"] = np.random.default_rng(43).integers(-(2**61), 2**61, 200)
    frame.loc[::7, "views"] = 12345

    got = run_on_table(3, frame, SPECS, quick_sorted_by(["views", "region"]))

    assert_frame_equal(got, expected_sort(frame, ["views", "region"]))


def test_sort_rows_refuses_unknown_methods() -> None:
    def program(party: Party) -> Shares:
        key = ValueKey(np.zeros(4, np.uint64), 3)
        return sort_rows(party, [key], np.zeros((4, 1), np.uint64), method="bubble")

    with pytest.raises(ValueError, match="unknown sort method 'bubble'"):
        run_parties(2, program, seed=1)


def test_table_sort_uses_the_chooser(monkeypatch: pytest.MonkeyPatch) -> None:
    chosen: list[str] = []
    import tally.mpc.sorting as sorting

    original = sorting.choose_sort

    def recording(widths: Sequence[int], rows: int) -> str:
        chosen.append(original(widths, rows))
        return chosen[-1]

    monkeypatch.setattr(sorting, "choose_sort", recording)
    frame = make_frame(50, regions=3, seed=44)

    def program(table: SecretTable) -> object:
        return table.sort_by("region").reveal()

    run_on_table(2, frame, SPECS, program)
    assert chosen and set(chosen) == {original([4], 50)}


# -- the chooser follows the measurements in docs/engine.md -----------------------------------


def _documented_choices() -> list[tuple[int, int, str]]:
    """(rows, key bits, chosen) from the measured table under "Sort: planned by key width"."""
    text = ENGINE_NOTES.read_text()
    section = text.split("**Sort: planned by key width.**", 1)[1].split("\n\n**", 1)[0]
    rows = re.findall(r"^\| 2\^(\d+) \| (\d+) \|.*\| (radix|quick) \|$", section, re.MULTILINE)
    return [(1 << int(r), int(w), chosen) for r, w, chosen in rows]


def test_chooser_picks_what_the_measurements_say() -> None:
    documented = _documented_choices()
    assert len(documented) >= 10, "the measured table in docs/engine.md is missing"
    for rows, width, chosen in documented:
        assert choose_sort([width], rows) == chosen, (rows, width)
