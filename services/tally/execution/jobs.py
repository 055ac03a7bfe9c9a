"""Job specs, their hash, job records and worker status files.

A job is submitted to every party with the same id and the same spec; the parties
compare :func:`spec_hash` before anything runs.  The id a client gives is a *name*
in its submitter's namespace: each party stores the job under its scoped id
(:mod:`tally.common.job_ids`), the same at every party.  Each party keeps its record
of the job in ``<state_dir>/jobs/<id>/job.json`` and each worker reports its progress
in ``w<k>.json`` beside it (atomic replace), which the service reads.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from tally.mpc.ring import Shares

Phase = Literal["Pending", "Reserving", "Running", "Succeeded", "Failed", "Cancelled"]
FINAL_PHASES = ("Succeeded", "Failed", "Cancelled")
JOB_ID_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"


class OutputSpec(BaseModel):
    """Where one program output goes: ``shares`` (a result dataset) or ``open`` (the result API)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["shares", "open"]
    recipients: list[str] = Field(
        min_length=1, max_length=64, description="identities that may read the output"
    )


class JobCreate(BaseModel):
    """A job as submitted, identical at every party."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=JOB_ID_PATTERN, description="the same id at every party")
    program: str = Field(
        min_length=1, max_length=128, description="a built-in's name or a program's SHA-256"
    )
    inputs: dict[str, str | list[str]] = Field(
        min_length=1,
        max_length=16,
        description="input name -> dataset id, or several ids whose rows are concatenated",
    )
    params: dict[str, Any] = Field(default_factory=dict, description="the program's parameters")
    outputs: dict[str, OutputSpec] = Field(
        min_length=1, description="program output name -> where it goes"
    )
    partitions: int = Field(default=1, ge=1, le=1024, description="P workers, one per partition")
    dp: dict[str, Any] | None = Field(
        default=None,
        description="differential privacy on aggregates: epsilon, delta, clip "
        "({column: [lo, hi]}), optionally unit and max_contributions",
    )

    def output_job_id(self, worker: int) -> str:
        """The id worker ``worker`` writes its result datasets under (one per partition)."""
        return f"{self.id}-w{worker}" if self.partitions > 1 else self.id


def spec_hash(spec: JobCreate) -> str:
    """SHA-256 of the spec's canonical JSON: equal at two parties iff they run the same job."""
    canonical = json.dumps(spec.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class WorkerStatus(BaseModel):
    """What a worker reports (``w<k>.json``)."""

    phase: Literal["Starting", "Connecting", "Running", "Succeeded", "Failed"] = "Starting"
    pid: int = 0
    pod: str = ""
    address: str = ""
    stage: int = 0
    stages_total: int = 0
    stage_name: str = ""
    generation: int = 0
    resumed_from: list[int] = Field(default_factory=list)
    bytes_sent: int = 0
    rounds: int = 0
    stage_seconds: list[float] = Field(default_factory=list)
    bytes_per_round: list[int] = Field(default_factory=list)
    checkpoint_seconds: float = 0.0
    tuple_seconds: float = 0.0
    prefetch_seconds: float = 0.0
    load_seconds: float = 0.0
    online_seconds: float = 0.0
    results: dict[str, str] = Field(default_factory=dict)
    reason: str = ""
    updated: float = 0.0


class JobPublic(BaseModel):
    """A job's status as the REST API shows it."""

    id: str
    program: str
    spec_hash: str
    phase: Phase
    stage: int
    stages_total: int
    restarts: int
    partitions: int
    bytes_sent: int
    rounds: int
    timings: dict[str, float]
    results: dict[str, list[str]] = Field(
        default_factory=dict, description="result dataset ids per output (shares outputs)"
    )
    reason: str = ""


class JobRecord(BaseModel):
    """This party's record of a job."""

    spec: JobCreate
    spec_hash: str
    submitter: str
    phase: Phase = "Pending"
    restarts: int = 0
    reason: str = ""
    timings: dict[str, float] = Field(default_factory=dict)
    workers: list[WorkerStatus] = Field(default_factory=list)
    stages_total: int = 0
    sharing: Literal["additive", "replicated"] = "additive"
    """The online path this party's workers take (its settings' at submission)."""

    def public(self) -> JobPublic:
        """The REST view: progress summed over workers (stage: the slowest worker's)."""
        workers = self.workers
        results: dict[str, list[str]] = {}
        for worker in workers:
            for output, dataset in worker.results.items():
                results.setdefault(output, []).append(dataset)
        return JobPublic(
            id=self.spec.id,
            program=self.spec.program,
            spec_hash=self.spec_hash,
            phase=self.phase,
            stage=min((w.stage for w in workers), default=0),
            stages_total=self.stages_total,
            restarts=self.restarts,
            partitions=self.spec.partitions,
            bytes_sent=sum(w.bytes_sent for w in workers),
            rounds=max((w.rounds for w in workers), default=0),
            timings=dict(self.timings),
            results=results,
            reason=self.reason,
        )


def write_json_atomic(path: Path, data: str) -> None:
    """Replace ``path`` with ``data`` so that a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    with os.fdopen(fd, "w") as handle:
        handle.write(data)
    os.replace(tmp, path)


class JobFiles:
    """Where a job's files live at this party."""

    def __init__(self, state_dir: Path, job_id: str) -> None:
        self.dir = Path(state_dir) / "jobs" / job_id
        self.job_id = job_id

    @property
    def record_path(self) -> Path:
        return self.dir / "job.json"

    def worker_path(self, worker: int) -> Path:
        return self.dir / f"w{worker}.json"

    def log_path(self, worker: int) -> Path:
        return self.dir / f"w{worker}.log"

    def save_record(self, record: JobRecord) -> None:
        write_json_atomic(self.record_path, record.model_dump_json())

    def load_record(self) -> JobRecord:
        return JobRecord.model_validate_json(self.record_path.read_text())

    def save_worker(self, worker: int, status: WorkerStatus) -> None:
        status.updated = time.time()
        write_json_atomic(self.worker_path(worker), status.model_dump_json())

    def load_worker(self, worker: int) -> WorkerStatus | None:
        try:
            return WorkerStatus.model_validate_json(self.worker_path(worker).read_text())
        except (OSError, ValueError):
            return None


def encode_array(values: Shares) -> str:
    """Little-endian uint64 bytes, base64 (JSON result bodies)."""
    return base64.b64encode(np.ascontiguousarray(values, dtype="<u8").tobytes()).decode()


def decode_array(text: str) -> Shares:
    """The inverse of :func:`encode_array`."""
    return np.frombuffer(base64.b64decode(text), dtype="<u8").astype(np.uint64)
