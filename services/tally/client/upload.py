"""Upload a table as secret shares to every party: all parties commit it, or none keeps it.

Steps (DESIGN §5):

1. Validate and encode the DataFrame on this machine (:func:`prepare_frame`): key
   columns to codes, numbers to int or fixed point; nothing leaves the machine
   before every value has passed.
2. With ``partitions`` P > 1, assign rows to partitions by a keyed hash of the key
   columns (the consortium key), sort each partition by key, pad all partitions to
   one size with ``valid = 0`` rows (uploaded as a ``valid`` column).
3. ``direct``: split every column into n additive shares with the OS CSPRNG; party
   i receives share i only.  ``masked``: reserve masks at every party, rebuild
   r = Σ r_i, send y = x − r to every party (party 0 stores y + r_0, the others r_i).
4. Create the dataset (one client-chosen id everywhere) and upload its parts at
   every party in parallel; then commit at every party.  If any upload fails,
   nothing is committed (a pending dataset is invisible, and each secret-store
   discards it); if a commit or a grant fails, the dataset is deleted wherever it
   was committed.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from tally.client.errors import InputError, TallyError
from tally.client.frames import PreparedTable, prepare_frame
from tally.client.http import ServiceClient, at_every_party, settle_at_every_party
from tally.client.keys import KeyCoding, KeyDictionary, format_key_tag
from tally.client.progress import progress_bar
from tally.common.result_layout import VALID_COLUMN
from tally.mpc.partition import partition_ids, split_partitions
from tally.mpc.ring import Shares, encode_int, reconstruct, split

Mode = Literal["direct", "masked"]
KEYS_TAG = "tally.keys"
PARTITION_TAG = "tally.partition_by"


@dataclass(frozen=True)
class EncodedTable:
    """Encoded columns (partition-major rows) and the schema sent to the secret-stores."""

    columns: dict[str, Shares]
    schema: list[dict[str, Any]]
    rows: int
    partitions: int
    tags: dict[str, str]


def infer_keys(frame: pd.DataFrame) -> list[str]:
    """Text columns in which no value is a number: they become key columns.

    A column with some numbers and some text stays a value column, so that
    :func:`prepare_frame` names the first row that is not a number.
    """
    keys = []
    for column in frame.columns:
        series = frame[column]
        if pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
            continue
        present = series.dropna()
        if len(present) and pd.to_numeric(present, errors="coerce").isna().all():
            keys.append(str(column))
    return keys


def encode_table(
    prepared: PreparedTable,
    partitions: int,
    partition_by: Sequence[str],
    hash_key: bytes | None,
    tags: Mapping[str, str],
    partition_rows: int | None = None,
) -> EncodedTable:
    """Partition (optionally), encode every column and build the dataset schema and tags.

    Every partition is padded to ``partition_rows`` (the consortium's fixed size, so
    that a provider's partition sizes say nothing about its data); without one, to the
    largest partition rounded up to a power of two (which still reveals its magnitude).
    """
    data = prepared.data
    specs = prepared.specs
    valid: NDArray[np.int64] | None = None
    if partitions > 1:
        if not partition_by:
            raise InputError("partitions > 1 needs key columns to partition by (keys=[...])")
        if hash_key is None:
            raise InputError("partitioning needs the consortium key (key_hash_secret)")
        size = _partition_size(data, list(partition_by), partitions, hash_key, partition_rows)
        parts = split_partitions(data, list(partition_by), partitions, hash_key, size)
        data = {n: np.concatenate([p[0][n] for p in parts]) for n in data}
        valid = np.concatenate([p[1] for p in parts]).astype(np.int64)
    rows = len(next(iter(data.values())))
    columns = {name: specs[name].encode(values) for name, values in data.items()}
    schema: list[dict[str, Any]] = [
        {"name": n, "kind": s.kind, "bits": s.bits, "frac_bits": s.frac_bits}
        for n, s in specs.items()
    ]
    if valid is not None:
        columns[VALID_COLUMN] = encode_int(valid)
        schema.append({"name": VALID_COLUMN, "kind": "bool"})
    codings = {
        name: KeyCoding.of(prepared.codecs.get(name), spec.bits)
        for name, spec in specs.items()
        if spec.kind == "key"
    }
    all_tags = dict(tags)
    if codings:
        all_tags[KEYS_TAG] = format_key_tag(codings)
        if len(all_tags[KEYS_TAG]) > 256:
            raise InputError("too many key columns to record their coding (at most ~8)")
    if partitions > 1:
        all_tags[PARTITION_TAG] = ",".join(partition_by)
    return EncodedTable(columns, schema, rows, partitions, all_tags)


@dataclass
class Uploader:
    """Uploads one encoded table to the secret-stores of every party."""

    stores: Sequence[ServiceClient]
    show_progress: bool | None = None

    @property
    def parties(self) -> int:
        return len(self.stores)

    def run(
        self,
        table: EncodedTable,
        name: str,
        mode: Mode,
        share_with: Sequence[str],
        dp_budget: float | None = None,
    ) -> dict[str, Any]:
        """Upload, commit everywhere and grant ``use``; returns party 0's dataset record."""
        dataset_id = str(uuid.uuid4())
        body: dict[str, Any] = {
            "id": dataset_id,
            "name": name,
            "columns": table.schema,
            "rows": table.rows,
            "partitions": table.partitions,
            "tags": table.tags,
        }
        if dp_budget is not None:
            body["dp_budget"] = float(dp_budget)
        steps = self.parties * len(table.columns) * table.partitions
        try:
            self._check_reachable()
            with progress_bar(f"upload {name}", steps, self.show_progress) as bar:
                if mode == "direct":
                    self._direct(table, body, bar.advance)
                else:
                    self._masked(table, body, bar.advance)
        except TallyError as error:
            raise type(error)(
                *_with_note(
                    error,
                    "nothing was committed at any party; the partial upload "
                    "is invisible and each secret-store discards it",
                )
            ) from None
        return self._commit(dataset_id, share_with)

    def _check_reachable(self) -> None:
        """Refuse before creating anything if any party's secret-store is down."""
        at_every_party([lambda s=s: s.request("GET", "/readyz") for s in self.stores])  # type: ignore[misc]

    def _direct(
        self, table: EncodedTable, body: dict[str, Any], advance: Callable[[], None]
    ) -> None:
        per_party: list[dict[str, Shares]] = [{} for _ in self.stores]
        for column, values in table.columns.items():
            for party, share in enumerate(split(values, self.parties)):
                per_party[party][column] = share

        def upload(party: int) -> None:
            store = self.stores[party]
            store.request("POST", "/v1/datasets", json=body)
            self._parts(store, f"/v1/datasets/{body['id']}", per_party[party], table, advance)

        at_every_party([lambda p=p: upload(p) for p in range(self.parties)])  # type: ignore[misc]

    def _masked(
        self, table: EncodedTable, body: dict[str, Any], advance: Callable[[], None]
    ) -> None:
        count = table.rows * len(table.schema)
        reservations = at_every_party(
            [
                lambda s=s: s.request("POST", "/v1/input-masks", json={"count": count})  # type: ignore[misc]
                for s in self.stores
            ]
        )
        masks = at_every_party(
            [
                lambda s=s, r=r: s.get_octets(r["shares_url"])  # type: ignore[misc]
                for s, r in zip(self.stores, reservations, strict=True)
            ]
        )
        mask = reconstruct(masks)
        masked: dict[str, Shares] = {}
        for position, column in enumerate(c["name"] for c in table.schema):
            masked[column] = table.columns[column] - mask[position * table.rows :][: table.rows]

        def upload(party: int) -> None:
            store = self.stores[party]
            created = {**body, "reservation_id": reservations[party]["id"]}
            store.request("POST", "/v1/masked-inputs", json=created)
            self._parts(store, f"/v1/masked-inputs/{body['id']}", masked, table, advance)

        at_every_party([lambda p=p: upload(p) for p in range(self.parties)])  # type: ignore[misc]

    @staticmethod
    def _parts(
        store: ServiceClient,
        prefix: str,
        columns: Mapping[str, Shares],
        table: EncodedTable,
        advance: Callable[[], None],
    ) -> None:
        size = table.rows // table.partitions
        for column, values in columns.items():
            for part in range(table.partitions):
                params = {"partition": part} if table.partitions > 1 else None
                chunk = values[part * size : (part + 1) * size]
                store.put_octets(f"{prefix}/columns/{column}", chunk, params)
                advance()

    def _commit(self, dataset_id: str, share_with: Sequence[str]) -> dict[str, Any]:
        def commit(store: ServiceClient) -> dict[str, Any]:
            record: dict[str, Any] = store.request("POST", f"/v1/datasets/{dataset_id}/commit")
            for grantee in share_with:
                store.request("PUT", f"/v1/datasets/{dataset_id}/grants/{grantee}/use")
            return record

        outcomes = settle_at_every_party([lambda s=s: commit(s) for s in self.stores])  # type: ignore[misc]
        failures = [(p, o) for p, o in enumerate(outcomes) if isinstance(o, BaseException)]
        if not failures:
            return outcomes[0]  # type: ignore[return-value]
        self.delete_everywhere(dataset_id)
        party, error = failures[0]
        if not isinstance(error, TallyError):
            raise error
        raise type(error)(
            *_with_note(
                error, f"the dataset was removed from every party (commit failed at party {party})"
            )
        ) from None

    def delete_everywhere(self, dataset_id: str) -> None:
        """Best effort: delete a dataset at every party that has it committed."""
        settle_at_every_party(
            [
                lambda s=s: s.request(  # type: ignore[misc]
                    "DELETE", f"/v1/datasets/{dataset_id}", allow=(404,)
                )
                for s in self.stores
            ]
        )


def _with_note(error: TallyError, note: str) -> tuple[Any, ...]:
    """The constructor arguments of ``error`` with ``note`` added to its message."""
    from tally.client.errors import JobFailedError, PartyRequestError

    if isinstance(error, PartyRequestError):
        return (error.party, error.status, error.code, f"{error.detail}; {note}")
    if isinstance(error, JobFailedError):
        return (error.job_id, error.party, f"{error.reason}; {note}")
    return (f"{error}; {note}",)


def _partition_size(
    data: Mapping[str, NDArray[Any]],
    keys: list[str],
    partitions: int,
    hash_key: bytes,
    fixed: int | None,
) -> int:
    largest = int(
        np.bincount(
            partition_ids([np.asarray(data[k]) for k in keys], partitions, hash_key),
            minlength=partitions,
        ).max()
    )
    if fixed is None:
        return 1 << max(largest - 1, 0).bit_length()
    if largest > fixed:
        raise InputError(
            f"a partition of this table holds {largest} rows, more than the consortium's "
            f"partition size ({fixed}, partition_rows in parties.yaml): use more partitions"
        )
    return fixed


def prepare_upload(
    frame: pd.DataFrame,
    *,
    keys: Sequence[str] | None,
    domains: Mapping[str, Sequence[Any]] | None,
    partitions: int,
    partition_by: Sequence[str] | None,
    hash_key: bytes | None,
    dictionary: KeyDictionary,
    tags: Mapping[str, str] | None,
    partition_rows: int | None = None,
) -> EncodedTable:
    """Validate, encode and partition a DataFrame; remember its key values locally."""
    if not isinstance(partitions, int) or partitions < 1:
        raise InputError(f"partitions must be a positive integer, got {partitions!r}")
    if isinstance(frame, pd.DataFrame) and not len(frame):
        raise InputError("the table has no rows")
    key_list = list(keys) if keys is not None else infer_keys(frame)
    prepared = prepare_frame(frame, keys=key_list, domains=domains, hash_key=hash_key)
    for codec in prepared.codecs.values():
        if codec.domain is not None:
            dictionary.remember_domain(codec.domain)
        else:
            dictionary.remember(codec.seen, codec.bits)
    key_columns = [n for n, s in prepared.specs.items() if s.kind == "key"]
    by = list(partition_by) if partition_by is not None else key_columns
    for name in by:
        if name not in key_columns:
            raise InputError(f"partition_by column {name!r} is not a key column ({key_columns})")
    user_tags = {str(k): str(v) for k, v in (tags or {}).items()}
    for reserved in (KEYS_TAG, PARTITION_TAG):
        if reserved in user_tags:
            raise InputError(f"tag {reserved!r} is set by the SDK")
    return encode_table(prepared, partitions, by, hash_key, user_tags, partition_rows)
