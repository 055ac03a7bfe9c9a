"""Result dataset layout: tags carry derived columns and order; opening adds the shares."""

from __future__ import annotations

import numpy as np

from tally.common.result_layout import (
    LAYOUT_TAG,
    TAG_VALUE_LIMIT,
    VALID_COLUMN,
    layout_tags,
    open_result,
    read_layout,
)
from tally.mpc.table import ColumnSpec, share_table


def test_long_layouts_are_cut_into_tag_sized_pieces_and_read_back() -> None:
    derived = {f"average_of_column_{i}": ("mean", f"__sum_{i}", "__count") for i in range(20)}
    order = ["region", *derived]
    tags = layout_tags(derived, order)
    assert len(tags) > 1 and all(len(v) <= TAG_VALUE_LIMIT for v in tags.values())
    assert all(key.startswith(LAYOUT_TAG) and len(key) <= 64 for key in tags)
    assert read_layout({**tags, "owner": "alice"}) == (derived, order)
    assert read_layout({"owner": "alice"}) == ({}, None)


def test_open_result_adds_shares_drops_padding_and_finishes_means() -> None:
    specs = {
        "region": ColumnSpec("key", bits=4),
        "__sum_v": ColumnSpec("int"),
        "__count": ColumnSpec("int"),
    }
    plain = {
        "region": np.array([1, 2, 0]),
        "__sum_v": np.array([10, -6, 0]),
        "__count": np.array([4, 3, 0]),
    }
    shares = share_table(plain, specs, 3, valid=np.array([1, 1, 0]))
    columns = [
        {"name": "region", "kind": "key", "bits": 4, "frac_bits": 0},
        {"name": "__sum_v", "kind": "int", "bits": 0, "frac_bits": 0},
        {"name": "__count", "kind": "int", "bits": 0, "frac_bits": 0},
        {"name": VALID_COLUMN, "kind": "bool", "bits": 1, "frac_bits": 0},
    ]
    tags = layout_tags({"avg": ("mean", "__sum_v", "__count")}, ["region", "avg"])
    result = open_result(columns, shares, tags)
    assert list(result) == ["region", "avg"]
    assert result["region"].tolist() == [1, 2]
    assert result["avg"].tolist() == [2.5, -2.0]
