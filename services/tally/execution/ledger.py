"""A worker's tuple ledger at one party: epochs opened and batches taken, fsynced before use.

Files under ``<state_dir>/tuples/<job>/``:

* ``w<k>.epochs``: every tuple epoch this party opened for worker k, one per line.
  A worker opens a new epoch each time a mesh forms (the first run and every
  resume), and an epoch is never opened twice, so a resumed stage always draws
  from material no earlier epoch touched.
* ``w<k>.ledger``: one JSON line per batch handed to the engine, written to the
  file *before* the batch is read, so the ledger is a superset of what was
  consumed even when the worker is killed mid-read (a killed process loses
  nothing it wrote; the file is fsynced when the worker closes it, since the
  tuple-service, not this ledger, is what refuses a second use).  Tests read it
  to show that no tuple was consumed twice.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO


class TupleLedger:
    """The epochs and batches of one worker of one job at this party."""

    def __init__(self, root: Path, job_id: str, worker: int) -> None:
        self.dir = Path(root) / "tuples" / job_id
        self.worker = worker
        self._lock = threading.Lock()
        self._handle: TextIO | None = None

    @property
    def epochs_path(self) -> Path:
        return self.dir / f"w{self.worker}.epochs"

    @property
    def path(self) -> Path:
        return self.dir / f"w{self.worker}.ledger"

    def epochs(self) -> list[int]:
        """Every epoch opened here, in order."""
        if not self.epochs_path.exists():
            return []
        return [int(line) for line in self.epochs_path.read_text().split()]

    def next_epoch(self) -> int:
        """The first epoch this party has never opened for the worker."""
        epochs = self.epochs()
        return max(epochs) + 1 if epochs else 0

    def open_epoch(self, epoch: int) -> None:
        """Record ``epoch`` as opened (durably); an epoch opened before is refused."""
        if epoch in self.epochs():
            raise RuntimeError(
                f"tuple epoch {epoch} of worker {self.worker} was already opened here"
            )
        self.dir.mkdir(parents=True, exist_ok=True)
        with self.epochs_path.open("a") as handle:
            handle.write(f"{epoch}\n")
            handle.flush()
            os.fsync(handle.fileno())

    def append(self, entry: dict[str, Any]) -> None:
        """Record one batch (written through to the OS) before it is handed out."""
        with self._lock:
            if self._handle is None:
                self.dir.mkdir(parents=True, exist_ok=True)
                self._handle = self.path.open("a")
            self._handle.write(json.dumps(entry) + "\n")
            self._handle.flush()

    def entries(self) -> list[dict[str, Any]]:
        """Every batch recorded for the worker, in order, over all epochs."""
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def close(self) -> None:
        """Sync and close the ledger file."""
        with self._lock:
            if self._handle is not None:
                self._handle.flush()
                os.fsync(self._handle.fileno())
                self._handle.close()
                self._handle = None


class LedgerAccess:
    """Ledger queries shared by the tuple providers; the subclass sets ``root``."""

    root: Path

    def ledger(self, job_id: str, worker: int) -> list[dict[str, Any]]:
        """Every batch handed out for the worker here, in order, over all epochs."""
        return TupleLedger(self.root, job_id, worker).entries()

    def next_free(self, job_id: str, worker: int) -> dict[str, int]:
        return {"epoch": TupleLedger(self.root, job_id, worker).next_epoch()}

    def _open_ledger(
        self, job_id: str, worker: int, start: Mapping[str, int]
    ) -> tuple[TupleLedger, int]:
        """Open the epoch named by ``start`` (default 0) in the worker's ledger."""
        epoch = int(start.get("epoch", 0))
        ledger = TupleLedger(self.root, job_id, worker)
        ledger.open_epoch(epoch)
        return ledger, epoch
