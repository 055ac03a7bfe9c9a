"""Validation and encoding before upload (no deployment): every bad value is named."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tally.client.errors import InputError, UnknownColumnError, ValueOutOfRangeError
from tally.client.keys import KeyCodec, KeyCoding, KeyDictionary, parse_key_tag
from tally.client.upload import EncodedTable, infer_keys, prepare_upload
from tally.mpc.ring import decode_fixed, decode_int

HASH_KEY = bytes(range(32))


def prepare(frame: pd.DataFrame, tmp_path: Path, **options: Any) -> EncodedTable:
    defaults = {
        "keys": None,
        "domains": None,
        "partitions": 1,
        "partition_by": None,
        "hash_key": HASH_KEY,
        "dictionary": KeyDictionary(tmp_path / "keys.json"),
        "tags": None,
    }
    return prepare_upload(frame, **{**defaults, **options})


def test_text_columns_become_keys_and_numbers_int_or_fixed(tmp_path: Path) -> None:
    frame = pd.DataFrame({"region": ["a", "b", "a"], "views": [1, 2, 3], "price": [0.5, 1.25, 2.0]})
    table = prepare(frame, tmp_path)
    kinds = {c["name"]: c["kind"] for c in table.schema}
    assert kinds == {"region": "key", "views": "int", "price": "fixed"}
    assert decode_int(table.columns["views"]).tolist() == [1, 2, 3]
    assert decode_fixed(table.columns["price"]).tolist() == [0.5, 1.25, 2.0]
    codings = parse_key_tag(table.tags["tally.keys"])
    assert codings == {"region": KeyCoding("hash", 40)}
    # the local dictionary maps the hashed codes back
    assert set(KeyDictionary(tmp_path / "keys.json").load(40).values()) == {"a", "b"}


def test_domain_keys_are_positions_and_recorded(tmp_path: Path) -> None:
    frame = pd.DataFrame({"region": ["south", "north"], "views": [1, 2]})
    table = prepare(frame, tmp_path, domains={"region": ["north", "south", "east"]})
    assert decode_int(table.columns["region"]).tolist() == [1, 0]
    coding = parse_key_tag(table.tags["tally.keys"])["region"]
    assert coding.kind == "domain" and coding.bits == 2
    assert KeyDictionary(tmp_path / "keys.json").domain(coding.digest) == ["north", "south", "east"]


def test_text_in_numeric_column_names_line_and_value(tmp_path: Path) -> None:
    frame = pd.DataFrame({"region": ["a", "b", "c"], "views": ["1", "two", "3"]})
    frame.index = pd.RangeIndex(2, 5, name="line")
    assert infer_keys(frame) == ["region"]
    with pytest.raises(ValueOutOfRangeError, match=r"column 'views' line 3: 'two' is not a number"):
        prepare(frame, tmp_path)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ([1, 2**62], r"row 1: .* is outside ±2\^62"),
        ([1.5, float("nan")], r"row 1: nan is missing or infinite"),
        ([0.5, 1e15], r"row 1: .* is outside ±2\^46"),
    ],
)
def test_out_of_range_values_are_refused(tmp_path: Path, values: list[float], message: str) -> None:
    frame = pd.DataFrame({"views": values})
    with pytest.raises(ValueOutOfRangeError, match=message):
        prepare(frame, tmp_path)


def test_key_errors(tmp_path: Path) -> None:
    with pytest.raises(UnknownColumnError, match="unknown column 'regio'"):
        prepare(pd.DataFrame({"region": ["a"], "v": [1]}), tmp_path, keys=["regio"])
    with pytest.raises(InputError, match=r"row 1: 'x' is not in the column's domain"):
        prepare(pd.DataFrame({"region": ["a", "x"]}), tmp_path, domains={"region": ["a", "b"]})
    with pytest.raises(InputError, match="consortium key"):
        prepare(pd.DataFrame({"region": ["a"]}), tmp_path, hash_key=None)
    with pytest.raises(InputError, match="no rows"):
        prepare(pd.DataFrame({"region": []}), tmp_path)


def test_partitions_pad_to_equal_size_with_valid(tmp_path: Path) -> None:
    frame = pd.DataFrame({"region": list("aaaaabbc"), "views": range(8)})
    table = prepare(frame, tmp_path, partitions=2)
    assert table.rows % 2 == 0 and table.partitions == 2
    assert table.schema[-1] == {"name": "valid", "kind": "bool"}
    valid = decode_int(table.columns["valid"])
    assert valid.sum() == 8
    views = decode_int(table.columns["views"])[valid == 1]
    assert sorted(views.tolist()) == list(range(8))
    assert table.tags["tally.partition_by"] == "region"


def test_partition_sizes_are_the_consortiums_not_the_providers(tmp_path: Path) -> None:
    small = pd.DataFrame({"region": list("aaaaabbc"), "views": range(8)})
    large = pd.DataFrame({"region": list("abcdefghij" * 5), "views": range(50)})
    fixed = [prepare(f, tmp_path, partitions=2, partition_rows=64) for f in (small, large)]
    # before, each provider padded to its own largest partition: the padded size told
    # the parties how its rows fell (regression)
    assert [t.rows for t in fixed] == [128, 128]
    for table, frame in zip(fixed, (small, large), strict=True):
        valid = decode_int(table.columns["valid"])
        assert valid.sum() == len(frame)
        assert sorted(decode_int(table.columns["views"])[valid == 1]) == list(range(len(frame)))
    with pytest.raises(InputError, match="more than the consortium's partition size"):
        prepare(large, tmp_path, partitions=2, partition_rows=10)
    # without a consortium size: the largest partition rounded up to a power of two
    rounded = prepare(large, tmp_path, partitions=2)
    assert rounded.rows // 2 in (32, 64) and (rounded.rows // 2) & (rounded.rows // 2 - 1) == 0


def test_key_codec_round_trip() -> None:
    codec = KeyCodec.hashed(HASH_KEY, 40)
    codes = codec.encode(["x", "y", "x"])
    assert codes[0] == codes[2] != codes[1]
    assert codec.decode(codes) == ["x", "y", "x"]
    assert KeyCodec.hashed(HASH_KEY, 40).decode(codes[:1]) == [f"#{int(codes[0]):x}"]
    assert np.all(codes < 2**40)
