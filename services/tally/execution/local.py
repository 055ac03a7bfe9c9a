"""Local implementations of the execution service's ports (development and tests).

* :class:`LocalDatasets`: datasets of shares in the party's blob store
  (``datasets/<id>/meta.json`` and ``datasets/<id>/p<k>/<column>``), with an
  owner, ``use`` grants (optionally per program) and readers; both an
  ``InputStore`` and a ``ResultStore``.  :func:`put_dataset` writes one.
* :class:`DealerTuples`: a ``TupleProvider`` whose material comes from the
  engine's seeded ``Dealer``; the seed is derived from a consortium development
  secret, the job, the worker and an *epoch*.  Every batch handed out is first
  appended (and fsynced) to the worker's ledger ``tuples/<job>/w<k>.ledger``, and
  each resume opens a new epoch (a fresh seed), so a resumed stage never sees a
  tuple again (:mod:`tally.execution.ledger`).  Development only: whoever holds
  the secret can rebuild every share.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, cast

import numpy as np

from tally.common.blobstore import BlobNotFound, BlobStore
from tally.common.policy import DisclosurePolicy
from tally.execution.ledger import LedgerAccess, TupleLedger
from tally.execution.ports import DatasetInfo, InputError, ResultTable, spec_from_schema
from tally.mpc.ring import Shares
from tally.mpc.table import ColumnSpec
from tally.mpc.tuples import Dealer, DealerSource, ShuffleShare, TupleSource


def _meta_key(dataset_id: str) -> str:
    return f"datasets/{dataset_id}/meta.json"


def put_dataset(
    blobs: BlobStore,
    dataset_id: str,
    parts: list[Mapping[str, Shares]],
    specs: Mapping[str, ColumnSpec],
    owner: str,
    use: Mapping[str, list[str] | None] | None = None,
    readers: list[str] | None = None,
    derived: Mapping[str, list[str]] | None = None,
    order: list[str] | None = None,
    policy: DisclosurePolicy | None = None,
) -> None:
    """Store one party's shares of a dataset (one mapping per partition, ``valid`` optional).

    ``use`` maps identities to the programs they may run on it (None: any program);
    ``policy`` is its owner's disclosure policy (None: the default).
    """
    rows = 0
    for index, part in enumerate(parts):
        for name, values in part.items():
            blobs.put(
                f"datasets/{dataset_id}/p{index}/{name}",
                np.ascontiguousarray(values, dtype=np.uint64).tobytes(),
            )
        rows += len(next(iter(part.values()))) if part else 0
    meta = {
        "id": dataset_id,
        "owner": owner,
        "rows": rows,
        "partitions": len(parts),
        "columns": [
            {"name": n, "kind": s.kind, "bits": s.bits, "frac_bits": s.frac_bits}
            for n, s in specs.items()
        ],
        "has_valid": all("valid" in part for part in parts),
        "use": dict(use or {}),
        "readers": list(readers or []),
        "derived": dict(derived or {}),
        "order": order,
        "policy": None if policy is None else policy.model_dump(mode="json"),
    }
    blobs.put(_meta_key(dataset_id), json.dumps(meta).encode())


def read_dataset(blobs: BlobStore, dataset_id: str, partition: int) -> dict[str, Shares]:
    """Every stored column of one partition (tests and the bench use it to reconstruct)."""
    meta = json.loads(blobs.get(_meta_key(dataset_id)))
    names = [c["name"] for c in meta["columns"]] + (["valid"] if meta["has_valid"] else [])
    return {
        name: np.frombuffer(blobs.get(f"datasets/{dataset_id}/p{partition}/{name}"), np.uint64)
        for name in names
    }


class LocalDatasets:
    """``InputStore`` and ``ResultStore`` over the party's blob store."""

    def __init__(self, blobs: BlobStore) -> None:
        self.blobs = blobs

    def _meta(self, dataset_id: str) -> dict[str, Any]:
        try:
            meta: dict[str, Any] = json.loads(self.blobs.get(_meta_key(dataset_id)))
            return meta
        except (BlobNotFound, ValueError):
            raise InputError(404, "unknown_dataset", f"dataset {dataset_id!r} not found") from None

    def describe(self, dataset_id: str, identity: str, program: str) -> DatasetInfo:
        meta = self._meta(dataset_id)
        if meta["owner"] != identity:
            grants = meta.get("use", {})
            if identity not in grants:
                raise InputError(
                    403,
                    "dataset_forbidden",
                    f"{identity!r} may not use dataset {dataset_id!r} as a job input",
                )
            allowed = grants[identity]
            if allowed is not None and program not in allowed:
                raise InputError(
                    403,
                    "dataset_forbidden",
                    f"{identity!r} may use dataset {dataset_id!r} only with programs {allowed}",
                )
        columns = {
            c["name"]: spec_from_schema(c["kind"], c["bits"], c["frac_bits"])
            for c in meta["columns"]
        }
        return DatasetInfo(
            dataset_id,
            columns,
            int(meta["rows"]),
            int(meta["partitions"]),
            meta["has_valid"],
            owner=meta["owner"],
            policy=DisclosurePolicy.model_validate(meta.get("policy") or {}),
            readers=tuple(meta.get("readers") or ()),
        )

    def read(
        self, info: DatasetInfo, identity: str, program: str, partition: int | None
    ) -> dict[str, Shares]:
        self.describe(info.id, identity, program)
        parts = range(info.partitions) if partition is None else [partition]
        loaded = [read_dataset(self.blobs, info.id, p) for p in parts]
        return {name: np.concatenate([part[name] for part in loaded]) for name in loaded[0]}

    def charge_dp(
        self,
        dataset_id: str,
        identity: str,
        program: str,
        job_id: str,
        epsilon: float,
        delta: float = 0.0,
    ) -> None:
        """Development datasets carry no privacy budget: only access is checked."""
        self.describe(dataset_id, identity, program)

    def write(
        self, job_id: str, output: str, parts: list[ResultTable], owner: str, readers: list[str]
    ) -> str:
        dataset_id = f"result-{job_id}-{output}"
        put_dataset(
            self.blobs,
            dataset_id,
            [{**p.columns, "valid": p.valid} for p in parts],
            parts[0].specs,
            owner,
            readers=readers,
            derived=parts[0].derived,
            order=parts[0].order,
        )
        return dataset_id


class _LedgerSource(TupleSource):
    """A dealer source that appends every batch to a ledger before handing it out."""

    def __init__(self, inner: DealerSource, ledger: TupleLedger, epoch: int) -> None:
        self.inner = inner
        self.party = inner.party
        self.parties = inner.parties
        self.generation_seconds = 0.0
        self.batches = 0
        self._epoch = epoch
        self._ledger = ledger

    def _timed(self, kind: str, *params: int | str) -> Any:
        entry = {"epoch": self._epoch, "batch": self.batches, "kind": kind, "params": params}
        self._ledger.append(entry)
        self.batches += 1
        started = time.perf_counter()
        try:
            return getattr(self.inner, kind)(*params)
        finally:
            self.generation_seconds += time.perf_counter() - started

    def triples(self, count: int) -> tuple[Shares, Shares, Shares]:
        return cast(tuple[Shares, Shares, Shares], self._timed("triples", count))

    def bit_triples(self, words: int) -> tuple[Shares, Shares, Shares]:
        return cast(tuple[Shares, Shares, Shares], self._timed("bit_triples", words))

    def dabits(self, count: int) -> tuple[Shares, Shares]:
        return cast(tuple[Shares, Shares], self._timed("dabits", count))

    def edabits(self, count: int, width: int) -> tuple[Shares, Shares]:
        return cast(tuple[Shares, Shares], self._timed("edabits", count, width))

    def shuffle(self, rows: int, kinds: str) -> ShuffleShare:
        return cast(ShuffleShare, self._timed("shuffle", rows, kinds))

    def input_masks(self, count: int) -> Shares:
        return cast(Shares, self._timed("input_masks", count))

    def position(self) -> dict[str, int]:
        """Where this source stands: its epoch and batches handed out in it."""
        return {"epoch": self._epoch, "batch": self.batches}

    def close(self) -> None:
        """Close the ledger."""
        self._ledger.close()


class DealerTuples(LedgerAccess):
    """``TupleProvider`` from a seeded dealer, one epoch per (re)start, with a ledger."""

    leads = False  # nothing to reserve: every party's dealer derives the same material

    def __init__(self, root: Path, party: int, parties: int, secret: str) -> None:
        self.root = Path(root)
        self.party = party
        self.parties = parties
        self._secret = secret.encode()

    def _dir(self, job_id: str) -> Path:
        path = self.root / "tuples" / job_id
        path.mkdir(parents=True, exist_ok=True)
        return path

    def reserve(self, job_id: str, workers: int, needs: Mapping[str, int]) -> None:
        record = {"job": job_id, "workers": workers, "state": "reserved", "time": time.time()}
        (self._dir(job_id) / "reservation.json").write_text(json.dumps(record))

    def release(self, job_id: str) -> None:
        path = self._dir(job_id) / "reservation.json"
        record = json.loads(path.read_text()) if path.exists() else {"job": job_id}
        record.update(state="released", released=time.time())
        path.write_text(json.dumps(record))

    def reservation(self, job_id: str) -> dict[str, Any]:
        """The reservation record (state ``reserved`` or ``released``)."""
        data: dict[str, Any] = json.loads((self._dir(job_id) / "reservation.json").read_text())
        return data

    def open(
        self,
        job_id: str,
        worker: int,
        start: Mapping[str, int],
        interrupted: Callable[[], BaseException | None] | None = None,
    ) -> TupleSource:
        ledger, epoch = self._open_ledger(job_id, worker, start)
        digest = hashlib.sha256(b"%s|%s|%d|%d" % (self._secret, job_id.encode(), worker, epoch))
        seed = int.from_bytes(digest.digest()[:8], "little")
        dealer = Dealer(self.parties, seed=seed, only_party=self.party)
        return _LedgerSource(dealer.source(self.party), ledger, epoch)
