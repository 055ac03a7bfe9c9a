"""Partitioned execution (the talk's "offline splitting + local sorting -> parallel secure sorting
per partition -> combine", DESIGN §6.4).

Provider side (plain data, before sharing): every provider assigns each row
to one of P partitions by a keyed hash of its group key, with the same
consortium-wide key, so equal keys land in the same partition at every
provider; sorts each partition locally by key; and pads all partitions to the
same size with ``valid = 0`` rows, so partition sizes reveal nothing.

Engine side: each partition is an independent group-by (P workers in
parallel, each with its own transport and tuple reservation); because keys
are disjoint across partitions, the result is the concatenation.

Pre-sorted runs: the radix sort costs the same whether or not its input is
already sorted, and a secure merge of k sorted runs needs comparisons whose
results cannot be opened (their pattern would reveal how the providers' keys
interleave) - about log2(m) levels of m comparisons of 38 bytes each, which
is more traffic than the radix sort's passes for keys of up to ~32 bits.  So
runs are merged by the same radix sort; local sorting still helps the
providers' padding and keeps partition sizes equal.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray


def partition_ids(
    keys: Sequence[NDArray[Any]], partitions: int, hash_key: bytes
) -> NDArray[np.int64]:
    """Partition of every row: keyed BLAKE2b of the row's key values, modulo P."""
    if partitions < 1:
        raise ValueError("partitions must be at least 1")
    if len(hash_key) < 16:
        raise ValueError("the partition hash key must have at least 16 bytes")
    if partitions == 1:
        return np.zeros(len(keys[0]) if keys else 0, dtype=np.int64)
    columns = [np.asarray(k) for k in keys]
    codes = np.zeros(len(columns[0]), dtype=np.int64)
    uniques: list[NDArray[Any]] = []
    for column in columns:  # hash each distinct key once, then map rows to it
        values, inverse = np.unique(column, return_inverse=True)
        codes = codes * len(values) + inverse.reshape(-1)
        uniques.append(values)
    distinct, row_to_distinct = np.unique(codes, return_inverse=True)
    assigned = np.empty(len(distinct), dtype=np.int64)
    for index, code in enumerate(distinct.tolist()):
        parts = []
        for values in reversed(uniques):
            code, position = divmod(code, len(values))
            parts.append(str(values[position]))
        message = "\x1f".join(reversed(parts)).encode()
        digest = hashlib.blake2b(message, key=hash_key[:64], digest_size=8).digest()
        assigned[index] = int.from_bytes(digest, "little") % partitions
    return assigned[row_to_distinct.reshape(-1)]


def split_partitions(
    data: Mapping[str, NDArray[Any]],
    keys: Sequence[str],
    partitions: int,
    hash_key: bytes,
    size: int | None = None,
) -> list[tuple[dict[str, NDArray[Any]], NDArray[np.int64]]]:
    """Split plain columns into P partitions, each sorted by ``keys`` and padded to one size.

    Returns (columns, valid) per partition.  ``size`` fixes the padded size
    (all providers of a consortium agree on it so that nothing about their row
    counts leaks); by default it is the largest partition.
    """
    if not keys:
        raise ValueError("partitioning needs at least one key column")
    ids = partition_ids([np.asarray(data[k]) for k in keys], partitions, hash_key)
    counts = np.bincount(ids, minlength=partitions)
    target = int(counts.max()) if size is None else size
    if target < int(counts.max()):
        raise ValueError(
            f"partition size {size} is smaller than the largest partition ({counts.max()})"
        )
    out = []
    for part in range(partitions):
        rows = np.flatnonzero(ids == part)
        order = np.lexsort([np.asarray(data[k])[rows] for k in reversed(keys)])
        rows = rows[order]
        padding = target - rows.shape[0]
        columns = {}
        for name, values in data.items():
            values = np.asarray(values)
            filler_value = values[rows[-1]] if name in keys and rows.shape[0] else 0
            filler = np.full(padding, filler_value, dtype=values.dtype)
            columns[name] = np.concatenate([values[rows], filler])
        valid = np.concatenate([np.ones(rows.shape[0], np.int64), np.zeros(padding, np.int64)])
        out.append((columns, valid))
    return out
