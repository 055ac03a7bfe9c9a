"""From a pandas DataFrame to validated, encoded columns and back.

Everything is checked here, before a single share leaves the machine: column
names, types, ranges, key values.  Errors name the column, the row and the
value, and say what to do.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from tally.client.errors import InputError, UnknownColumnError, ValueOutOfRangeError
from tally.client.keys import DEFAULT_HASH_BITS, KeyCodec
from tally.mpc.ring import BOUND, EncodingError
from tally.mpc.table import ColumnSpec

INT_KEY_BITS = 32
NAME_OK = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


@dataclass
class PreparedTable:
    """Encoded plain columns ready to be secret-shared, with their specs and key codecs."""

    data: dict[str, NDArray[Any]]
    specs: dict[str, ColumnSpec]
    codecs: dict[str, KeyCodec] = field(default_factory=dict)
    rows: int = 0


def _first_bad(mask: NDArray[np.bool_]) -> int:
    return int(np.flatnonzero(mask)[0])


def _row(series: pd.Series, position: int) -> str:
    """Where a value is, by the frame's index: ``row 3`` (or ``line 5`` for a CSV index)."""
    return f"{series.index.name or 'row'} {series.index[position]}"


def _numeric(series: pd.Series, name: str) -> pd.Series:
    """The column as numbers; names the first row that is not a number."""
    if pd.api.types.is_bool_dtype(series):
        return series.astype(np.int64)
    if pd.api.types.is_numeric_dtype(series):
        return series
    converted = pd.to_numeric(series, errors="coerce")
    bad = converted.isna().to_numpy() & series.notna().to_numpy()
    if bad.any():
        row = _first_bad(bad)
        raise ValueOutOfRangeError(
            f"column {name!r} {_row(series, row)}: {series.iloc[row]!r} is not a number "
            f"(to group by text, name the column in keys=[...])"
        )
    return converted


def _check_finite(values: NDArray[Any], series: pd.Series, name: str) -> None:
    if values.dtype.kind == "f":
        bad = ~np.isfinite(values)
        if bad.any():
            row = _first_bad(bad)
            raise ValueOutOfRangeError(
                f"column {name!r} {_row(series, row)}: {values[row]} is missing or infinite"
            )


def _value_column(series: pd.Series, name: str, frac_bits: int) -> tuple[NDArray[Any], ColumnSpec]:
    numbers = _numeric(series, name)
    values = numbers.to_numpy()
    _check_finite(values, series, name)
    if values.dtype.kind == "f" and not np.all(values == np.round(values)):
        limit = float(1 << (62 - frac_bits))
        bad = np.abs(values) >= limit
        if bad.any():
            row = _first_bad(bad)
            raise ValueOutOfRangeError(
                f"column {name!r} {_row(series, row)}: {values[row]} is outside ±2^{62 - frac_bits}"
            )
        return values.astype(np.float64), ColumnSpec("fixed", frac_bits=frac_bits)
    as_int = values.astype(np.float64) if values.dtype.kind == "f" else values
    bad = np.abs(as_int.astype(np.float64)) >= float(BOUND)
    if bad.any():
        row = _first_bad(bad)
        raise ValueOutOfRangeError(
            f"column {name!r} {_row(series, row)}: {values[row]} is outside ±2^62"
        )
    return np.asarray(as_int, dtype=np.int64), ColumnSpec("int")


def _key_column(
    series: pd.Series,
    name: str,
    domain: Sequence[Any] | None,
    hash_key: bytes | None,
    bits: int | None,
) -> tuple[NDArray[Any], ColumnSpec, KeyCodec | None]:
    if series.isna().any():
        row = _first_bad(series.isna().to_numpy())
        raise InputError(f"key column {name!r} {_row(series, row)} is empty")
    if domain is not None:
        codec = KeyCodec.for_domain(domain)
        known = {str(v) for v in codec.domain or ()}
        outside = ~series.astype(str).isin(known).to_numpy()
        if outside.any():
            row = _first_bad(outside)
            raise InputError(
                f"key column {name!r} {_row(series, row)}: {series.iloc[row]!r} is not in "
                "the column's domain"
            )
        return codec.encode(series.tolist(), name), ColumnSpec("key", bits=codec.bits), codec
    if pd.api.types.is_integer_dtype(series) and not pd.api.types.is_bool_dtype(series):
        values = series.to_numpy(dtype=np.int64)
        width = bits or INT_KEY_BITS
        if values.size and values.min() < 0:
            raise ValueOutOfRangeError(
                f"key column {name!r} {_row(series, _first_bad(values < 0))}: negative key "
                "codes are not "
                "allowed; give a domain or use text keys"
            )
        if values.size and values.max() >= (1 << width):
            raise ValueOutOfRangeError(
                f"key column {name!r} {_row(series, _first_bad(values >= (1 << width)))}: "
                f"{values.max()} needs more than {width} key bits"
            )
        return values, ColumnSpec("key", bits=width), None
    if hash_key is None:
        raise InputError(
            f"key column {name!r} holds text: give its domain, or configure the consortium key "
            "(key_hash_secret in parties.yaml) so every provider maps text keys the same way"
        )
    codec = KeyCodec.hashed(hash_key, bits or DEFAULT_HASH_BITS)
    return (
        codec.encode(series.astype(str).tolist(), name),
        ColumnSpec("key", bits=codec.bits),
        codec,
    )


def prepare_frame(
    frame: pd.DataFrame,
    keys: Sequence[str] = (),
    domains: Mapping[str, Sequence[Any]] | None = None,
    hash_key: bytes | None = None,
    key_bits: Mapping[str, int] | None = None,
    frac_bits: int = 16,
) -> PreparedTable:
    """Validate and encode a DataFrame: key columns to codes, numbers to int or fixed point."""
    if not isinstance(frame, pd.DataFrame):
        raise InputError(f"expected a pandas DataFrame, got {type(frame).__name__}")
    if frame.columns.duplicated().any():
        raise InputError("column names must be unique")
    if not len(frame.columns):
        raise InputError("the table has no columns")
    domains = dict(domains or {})
    for name in [*keys, *domains]:
        if name not in frame.columns:
            raise UnknownColumnError(
                f"unknown column {name!r}; the table has {sorted(map(str, frame.columns))}"
            )
    data: dict[str, NDArray[Any]] = {}
    specs: dict[str, ColumnSpec] = {}
    codecs: dict[str, KeyCodec] = {}
    for column in frame.columns:
        name = str(column)
        if not name or not set(name) <= NAME_OK or name == "valid" or len(name) > 64:
            raise InputError(
                f"column name {name!r}: use 1-64 letters, digits or underscores (not 'valid')"
            )
        series = frame[column]
        if name in keys or name in domains:
            bits = (key_bits or {}).get(name)
            values, spec, codec = _key_column(series, name, domains.get(name), hash_key, bits)
            if codec is not None:
                codecs[name] = codec
        else:
            values, spec = _value_column(series, name, frac_bits)
        try:
            spec.encode(values)
        except EncodingError as error:
            raise ValueOutOfRangeError(f"column {name!r}: {error}") from None
        data[name], specs[name] = values, spec
    return PreparedTable(data, specs, codecs, len(frame))


def decode_frame(plain: Mapping[str, NDArray[Any]], codecs: Mapping[str, KeyCodec]) -> pd.DataFrame:
    """Opened output columns to a DataFrame, key codes mapped back to their values."""
    columns: dict[str, Any] = {}
    for name, values in plain.items():
        codec = codecs.get(name)
        columns[name] = codec.decode(values) if codec is not None else values
    return pd.DataFrame(columns)
