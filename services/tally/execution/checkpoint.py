"""Checkpoints: a worker's state after each stage, in the party's blob store (DESIGN §7).

Blob ``checkpoints/<job>/w<worker>/stage-<k>`` holds the state after stage k:
a little-endian length, a JSON header (public values, the tuple position the
stage ended at, array dtypes and shapes), then the raw array bytes.  Writes go
through :meth:`BlobStore.put_stream`, which is atomic, on a background thread,
so the next stage runs while the previous checkpoint is written; a checkpoint
counts as held only once its write has finished.  The arrays are written from
where they are (no copy into one blob): a stage makes new arrays and never
changes its input's in place, so they stay as they were while the write runs.
When a worker resumes, the parties agree on the newest stage that all of them
hold (:mod:`tally.execution.recovery`).
"""

from __future__ import annotations

import json
import re
import struct
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from tally.common.blobstore import BlobNotFound, BlobStore
from tally.execution.stages import State

_LENGTH = struct.Struct("<Q")
_STAGE = re.compile(r"stage-(\d+)$")


def encode_parts(
    state: State, extra: dict[str, Any] | None = None
) -> tuple[list[bytes | memoryview], int]:
    """A state's blob as parts (the header, then views of the arrays) and its length."""
    names = sorted(state.arrays)
    arrays = [np.ascontiguousarray(state.arrays[n]) for n in names]
    header = {
        "public": state.public,
        "extra": extra or {},
        "arrays": [[n, a.dtype.str, list(a.shape)] for n, a in zip(names, arrays, strict=True)],
    }
    encoded = json.dumps(header).encode()
    parts: list[bytes | memoryview] = [_LENGTH.pack(len(encoded)), encoded]
    parts += [a.data.cast("B") for a in arrays if a.nbytes]
    return parts, sum(len(part) for part in parts)


def encode_state(state: State, extra: dict[str, Any] | None = None) -> bytes:
    """One blob for a state (and extra public values, e.g. the tuple position)."""
    return b"".join(encode_parts(state, extra)[0])


def decode_state(blob: bytes) -> State:
    """The state :func:`encode_state` stored."""
    return decode_checkpoint(blob)[0]


def decode_checkpoint(blob: bytes) -> tuple[State, dict[str, Any]]:
    """The state and the extra values of a checkpoint blob."""
    (length,) = _LENGTH.unpack_from(blob)
    header = json.loads(blob[8 : 8 + length])
    offset = 8 + length
    arrays = {}
    for name, dtype, shape in header["arrays"]:
        array = np.frombuffer(blob, dtype=np.dtype(dtype), count=int(np.prod(shape)), offset=offset)
        arrays[name] = array.reshape(shape).copy()
        offset += arrays[name].nbytes
    return State(arrays, header["public"]), header["extra"]


class CheckpointStore:
    """One worker's checkpoints of one job, written in the background."""

    def __init__(self, blobs: BlobStore, job_id: str, worker: int) -> None:
        self._blobs = blobs
        self._prefix = f"checkpoints/{job_id}/w{worker}/"
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint")
        self._pending: Future[None] | None = None
        self._lock = threading.Lock()
        self.bytes_written = 0
        self.write_seconds = 0.0

    def _key(self, stage: int) -> str:
        return f"{self._prefix}stage-{stage:04d}"

    def save(
        self, stage: int, state: State, extra: dict[str, Any], prune_before: int | None = None
    ) -> None:
        """Start writing the state after ``stage`` (waits for the previous write first).

        With ``prune_before``, the checkpoints of older stages are deleted once this one
        is written, in the background too (deleting a large file is not free).
        """
        self.flush()
        parts, length = encode_parts(state, extra)

        def write() -> None:
            started = time.perf_counter()
            self._blobs.put_stream(self._key(stage), parts, length)
            with self._lock:
                self.bytes_written += length
                self.write_seconds += time.perf_counter() - started
            if prune_before is not None:
                self.prune(prune_before)

        self._pending = self._writer.submit(write)

    def flush(self) -> None:
        """Wait for the checkpoint being written, if any (its errors surface here)."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def held(self) -> list[int]:
        """Stages whose checkpoint is stored (complete: blob writes are atomic)."""
        stages = []
        for key in self._blobs.list(self._prefix):
            match = _STAGE.search(key)
            if match:
                stages.append(int(match.group(1)))
        return sorted(stages)

    def load(self, stage: int) -> tuple[State, dict[str, Any]]:
        """The state after ``stage`` and its extra values."""
        try:
            return decode_checkpoint(self._blobs.get(self._key(stage)))
        except BlobNotFound:
            raise FileNotFoundError(f"no checkpoint of stage {stage}") from None

    def prune(self, keep_from: int) -> None:
        """Drop checkpoints older than ``keep_from`` (no party can resume before it any more)."""
        for stage in self.held():
            if stage < keep_from:
                self._blobs.delete(self._key(stage))

    def clear(self) -> None:
        """Remove every checkpoint of this worker (the job is over)."""
        self.flush()
        self._blobs.delete_prefix(self._prefix)

    def close(self) -> None:
        """Finish the pending write and stop the writer thread."""
        try:
            self.flush()
        finally:
            self._writer.shutdown(wait=True)
