"""Tests for tally.mpc.partition: provider-side splitting, then a group-by per partition."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tally.mpc.partition import partition_ids, split_partitions
from tally.mpc.party import Party
from tally.mpc.simulate import run_parties
from tally.mpc.table import ColumnSpec, share_table, table_from_share_set

TIMEOUT = 60.0
HASH_KEY = b"consortium-partition-key-2026"
SPECS = {
    "region": ColumnSpec("key", bits=5),
    "channel": ColumnSpec("key", bits=2),
    "views": ColumnSpec("int"),
    "price": ColumnSpec("fixed"),
}
KEYS = ["region", "channel"]
AGGREGATIONS = {
    "total": ("views", "sum"),
    "n": ("views", "count"),
    "avg": ("price", "mean"),
    "hi": ("views", "max"),
}

Partition = tuple[dict[str, np.ndarray], np.ndarray]


def provider_data(rows: int, regions: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "region": rng.integers(0, regions, rows),
        "channel": rng.integers(0, 3, rows),
        "views": rng.integers(-100, 1000, rows),
        "price": rng.integers(-800, 800, rows) / 32.0,
    }


def agreed_size(providers: Sequence[Mapping[str, np.ndarray]], partitions: int) -> int:
    """The padded size the consortium agrees on: the largest partition at any provider."""
    return max(
        int(
            np.bincount(
                partition_ids([p[k] for k in KEYS], partitions, HASH_KEY), minlength=partitions
            ).max()
        )
        for p in providers
    )


def real_rows(part: Partition) -> pd.DataFrame:
    columns, valid = part
    frame = pd.DataFrame(columns)
    return frame.iloc[np.flatnonzero(valid == 1)]


def key_set(frame: pd.DataFrame) -> set[tuple[int, ...]]:
    return set(map(tuple, frame[KEYS].to_numpy().tolist()))


# -- provider side (plain) -----------------------------------------------------------------------


def test_split_partitions_over_two_providers() -> None:
    providers = [provider_data(300, 16, seed=1), provider_data(200, 12, seed=2)]
    size = agreed_size(providers, 3)

    splits = [split_partitions(p, KEYS, 3, HASH_KEY, size=size) for p in providers]

    for data, parts in zip(providers, splits, strict=True):
        assert len(parts) == 3
        for columns, valid in parts:
            # padded to the agreed size, real rows first, then valid = 0 rows
            assert list(columns) == list(data)
            assert all(len(v) == size for v in columns.values()) and len(valid) == size
            real = int(valid.sum())
            np.testing.assert_array_equal(valid, [1] * real + [0] * (size - real))
            # each partition sorted locally by the keys
            frame = pd.DataFrame(columns)[:real]
            np.testing.assert_array_equal(frame.index, frame.sort_values(KEYS, kind="stable").index)
        # every row lands in exactly one partition, unchanged
        union = pd.concat([real_rows(p) for p in parts]).sort_values([*KEYS, "views", "price"])
        original = pd.DataFrame(data).sort_values([*KEYS, "views", "price"])
        np.testing.assert_array_equal(union.to_numpy(), original.to_numpy())
    # keys are disjoint across partitions, also across providers
    partition_keys = [
        key_set(real_rows(splits[0][p])) | key_set(real_rows(splits[1][p])) for p in range(3)
    ]
    for p in range(3):
        for q in range(p + 1, 3):
            assert partition_keys[p].isdisjoint(partition_keys[q])


def test_default_size_is_the_largest_partition() -> None:
    data = provider_data(100, 10, seed=3)

    parts = split_partitions(data, ["region"], 4, HASH_KEY)

    counts = [int(valid.sum()) for _, valid in parts]
    assert sum(counts) == 100
    assert {len(valid) for _, valid in parts} == {max(counts)}


def test_padding_rows_repeat_the_last_key_so_they_join_an_existing_group() -> None:
    data = provider_data(50, 6, seed=4)

    for columns, valid in split_partitions(data, KEYS, 2, HASH_KEY, size=60):
        real = int(valid.sum())
        for key in KEYS:
            np.testing.assert_array_equal(columns[key][real:], columns[key][real - 1])
        np.testing.assert_array_equal(columns["views"][real:], 0)


def test_partition_ids_depend_only_on_the_key_values_and_the_hash_key() -> None:
    regions = np.arange(200)
    shuffled = np.random.default_rng(5).permutation(200)

    ids = partition_ids([regions], 4, HASH_KEY)
    ids_shuffled = partition_ids([shuffled], 4, HASH_KEY)
    other_key = partition_ids([regions], 4, b"another-consortium-key")

    assert ids.min() >= 0 and ids.max() < 4
    np.testing.assert_array_equal(ids_shuffled, ids[shuffled])
    assert not np.array_equal(ids, other_key)
    np.testing.assert_array_equal(partition_ids([regions], 1, HASH_KEY), 0)
    # roughly balanced: 200 keys over 4 partitions
    assert np.bincount(ids, minlength=4).min() >= 25


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: partition_ids([np.arange(3)], 0, HASH_KEY), "at least 1"),
        (lambda: partition_ids([np.arange(3)], 2, b"short"), "16 bytes"),
        (lambda: split_partitions({"region": np.arange(3)}, [], 2, HASH_KEY), "key column"),
        (
            lambda: split_partitions({"region": np.zeros(9, int)}, ["region"], 2, HASH_KEY, size=5),
            "smaller than the largest",
        ),
    ],
    ids=["no-partitions", "short-hash-key", "no-keys", "size-too-small"],
)
def test_bad_arguments_are_refused(call: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


# -- engine side: a group-by per partition, concatenated ------------------------------------------


def group_partition(parties: int, parts: Sequence[Partition], seed: int) -> dict[str, np.ndarray]:
    """Share every provider's copy of one partition, stack them, run the group-by."""
    share_sets = [
        share_table(columns, SPECS, parties, valid=valid, rng=np.random.default_rng(i))
        for i, (columns, valid) in enumerate(parts)
    ]
    stacked = [
        {name: np.concatenate([s[party][name] for s in share_sets]) for name in share_sets[0][0]}
        for party in range(parties)
    ]

    def program(party: Party) -> dict[str, np.ndarray]:
        table = table_from_share_set(party, stacked[party.id], SPECS)
        return table.group_by(KEYS).agg(**AGGREGATIONS).reveal()

    return run_parties(parties, program, seed=seed, timeout=TIMEOUT)[0]


def partitioned_group_by(
    parties: int, providers: Sequence[Mapping[str, np.ndarray]], partitions: int
) -> pd.DataFrame:
    size = agreed_size(providers, partitions)
    splits = [split_partitions(p, KEYS, partitions, HASH_KEY, size=size) for p in providers]
    outputs = [
        pd.DataFrame(group_partition(parties, [s[p] for s in splits], seed=p))
        for p in range(partitions)
    ]
    # keys are disjoint across partitions, so the result is the concatenation
    return pd.concat(outputs).sort_values(KEYS, kind="stable").reset_index(drop=True)


def expected_over(providers: Sequence[Mapping[str, np.ndarray]]) -> pd.DataFrame:
    whole = pd.concat([pd.DataFrame(p) for p in providers])
    return whole.groupby(KEYS).agg(**AGGREGATIONS).reset_index()


def assert_matches(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert list(got.columns) == list(expected.columns)
    assert len(got) == len(expected)
    for name in expected.columns:
        np.testing.assert_allclose(
            got[name].to_numpy(float),
            expected[name].to_numpy(float),
            rtol=0,
            atol=1e-9,
            err_msg=name,
        )


@pytest.mark.parametrize("parties", [2, 3, 5])
def test_partitioned_group_by_equals_pandas_over_all_data(parties: int) -> None:
    rows = 40 if parties >= 5 else 150
    providers = [provider_data(rows, 16, seed=6), provider_data(rows, 16, seed=7)]
    size = agreed_size(providers, 3)
    for data in providers:  # no provider has an empty partition here
        counts = [int(v.sum()) for _, v in split_partitions(data, KEYS, 3, HASH_KEY, size=size)]
        assert min(counts) > 0

    got = partitioned_group_by(parties, providers, partitions=3)

    assert_matches(got, expected_over(providers))


def test_partitioned_group_by_with_empty_partitions() -> None:
    """Eight partitions for two keys: most partitions hold only padding and must add no group."""
    providers = [provider_data(60, 2, seed=8), provider_data(40, 2, seed=9)]
    for data in providers:
        data["channel"] = np.zeros_like(data["channel"])
    size = agreed_size(providers, 8)
    real_counts = [
        int(v.sum())
        for data in providers
        for _, v in split_partitions(data, KEYS, 8, HASH_KEY, size=size)
    ]
    assert real_counts.count(0) >= 6

    got = partitioned_group_by(3, providers, partitions=8)

    assert_matches(got, expected_over(providers))
