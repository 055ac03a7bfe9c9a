"""Jobs: submit to every party, follow their progress, fetch and reconstruct the result.

A job runs only when every party accepted the same id and spec.  Its status here
sums up the parties' views: failed if any party failed (naming that party and its
reason), succeeded when all did.  This client keeps a small record of each job it
submitted (``<client_dir>/jobs/<id>.json``: the spec and how to decode key
columns), so that ``tally result JOB`` works from another process.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from tally.client.errors import (
    JobFailedError,
    PartyUnreachableError,
    TallyError,
)
from tally.client.frames import decode_frame
from tally.client.http import ServiceClient, at_every_party, settle_at_every_party
from tally.client.keys import KeyCodec, KeyDictionary
from tally.client.progress import progress_bar
from tally.client.results import combine_results

FINAL = ("Succeeded", "Failed", "Cancelled")
UNREACHABLE_GRACE_S = 5.0
POLL_S = 0.2
"""Pause before asking again after a party did not answer."""
FOLLOW_S = 2.0
"""How long one status request may wait at a party for the job to change (long poll)."""


class JobTimeoutError(TallyError, TimeoutError):
    """A job did not finish in the time the caller allowed."""


class UnknownJobError(TallyError, LookupError):
    """No job of that id is known to this client or visible at the parties."""


@dataclass(frozen=True)
class JobStatus:
    """A job's state over all parties."""

    job_id: str
    phase: str
    stage: int
    stages_total: int
    parties: list[dict[str, Any]]
    reason: str = ""
    failed_party: int | None = None

    @property
    def done(self) -> bool:
        """Whether the job has ended (succeeded, failed or cancelled)."""
        return self.phase in FINAL


def summarize(job_id: str, states: Sequence[Mapping[str, Any]]) -> JobStatus:
    """One status from every party's ``GET /v1/jobs/{id}``."""
    phases = [str(s["phase"]) for s in states]
    failed = [i for i, p in enumerate(phases) if p in ("Failed", "Cancelled")]
    if failed:
        # the first party whose reason is not merely a lost peer is the likelier cause
        party = next(
            (i for i in failed if "peer" not in str(states[i].get("reason", ""))), failed[0]
        )
        phase, reason = phases[party], str(states[party].get("reason") or phases[party].lower())
    elif all(p == "Succeeded" for p in phases):
        party, phase, reason = None, "Succeeded", ""
    else:
        order = ("Pending", "Reserving", "Running", "Succeeded")
        phase = min(phases, key=lambda p: order.index(p) if p in order else 0)
        party, reason = None, ""
    return JobStatus(
        job_id=job_id,
        phase=phase,
        stage=min(int(s.get("stage", 0)) for s in states),
        stages_total=max(int(s.get("stages_total", 0)) for s in states),
        parties=[dict(s) for s in states],
        reason=reason,
        failed_party=party,
    )


@dataclass
class JobRecord:
    """What this client remembers about a job it submitted."""

    id: str
    spec: dict[str, Any]
    description: str
    decode: dict[str, dict[str, Any]] = field(default_factory=dict)
    post: dict[str, Any] = field(default_factory=dict)
    created: float = field(default_factory=time.time)
    service_id: str = ""
    """The id the parties keep the job under (``id`` scoped to the submitter)."""

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{self.id}.json"
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(self.__dict__))
        temporary.replace(path)

    @classmethod
    def load(cls, directory: Path, job_id: str) -> JobRecord:
        path = directory / f"{job_id}.json"
        if not path.exists():
            raise UnknownJobError(
                f"no job {job_id!r} was submitted from this client (`tally jobs` lists them)"
            )
        return cls(**json.loads(path.read_text()))

    @classmethod
    def all(cls, directory: Path) -> list[JobRecord]:
        records = [cls(**json.loads(p.read_text())) for p in directory.glob("*.json")]
        return sorted(records, key=lambda r: r.created)


def new_job_id() -> str:
    """A fresh job id (the same at every party)."""
    return f"job-{uuid.uuid4().hex[:12]}"


class Job:
    """A submitted job: :meth:`status`, :meth:`wait`, :meth:`result`, :meth:`cancel`."""

    def __init__(
        self,
        record: JobRecord,
        executions: Sequence[ServiceClient],
        dictionary: KeyDictionary,
        hash_key: bytes | None,
        show_progress: bool | None = None,
    ) -> None:
        self.record = record
        self.id = record.id
        self.service_id = record.service_id or record.id
        """The parties' id of the job: ``id`` scoped to its submitter (docs/execution.md)."""
        self._executions = executions
        self._dictionary = dictionary
        self._hash_key = hash_key
        self._show_progress = show_progress

    def __repr__(self) -> str:
        return f"Job({self.id!r}, {self.record.description!r})"

    def status(self) -> JobStatus:
        """The job's phase and progress at every party."""
        states = at_every_party(
            [lambda e=e: e.request("GET", f"/v1/jobs/{self.id}") for e in self._executions]  # type: ignore[misc]
        )
        return summarize(self.id, states)

    def _poll(self, unreachable_since: dict[int, float], wait: float) -> JobStatus | None:
        params = {"wait": round(wait, 3)} if wait > 0 else {}
        outcomes = settle_at_every_party(
            [
                lambda e=e: e.request("GET", f"/v1/jobs/{self.id}", params=params)  # type: ignore[misc]
                for e in self._executions
            ]
        )
        now = time.monotonic()
        states = []
        for party, outcome in enumerate(outcomes):
            if isinstance(outcome, PartyUnreachableError):
                since = unreachable_since.setdefault(party, now)
                if now - since > UNREACHABLE_GRACE_S:
                    raise PartyUnreachableError(f"job {self.id} cannot finish: {outcome}") from None
                continue
            if isinstance(outcome, BaseException):
                raise outcome
            unreachable_since.pop(party, None)
            states.append(outcome)
        if len(states) != len(outcomes):
            return None
        return summarize(self.id, states)

    def wait(self, timeout: float | None = None) -> JobStatus:
        """Wait until the job ends; a progress bar on a terminal.  Raises if it failed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        unreachable: dict[int, float] = {}
        wait = 0.0
        with progress_bar(f"job {self.id}", 1, self._show_progress) as bar:
            while True:
                status = self._poll(unreachable, wait)
                if status is not None:
                    text = f"job {self.id}: {status.phase.lower()}"
                    bar.update(status.stage, max(status.stages_total, 1), text)
                    if status.done:
                        break
                if deadline is not None and time.monotonic() > deadline:
                    raise JobTimeoutError(
                        f"job {self.id} is still running after {timeout:.0f} s; "
                        f"`tally status {self.id}` follows it, `tally result {self.id}` waits"
                    )
                if status is None:
                    time.sleep(POLL_S)
                # Each party answers when the job changes there (the server waits, not us).
                left = FOLLOW_S if deadline is None else deadline - time.monotonic()
                wait = max(0.0, min(FOLLOW_S, left))
        if status.phase != "Succeeded":
            raise JobFailedError(self.id, status.failed_party or 0, status.reason)
        return status

    def cancel(self) -> None:
        """Cancel the job at every party (best effort)."""
        settle_at_every_party(
            [lambda e=e: e.request("DELETE", f"/v1/jobs/{self.id}") for e in self._executions]  # type: ignore[misc]
        )

    def result(self, timeout: float | None = None) -> pd.DataFrame:
        """Wait, fetch every party's result shares, reconstruct and decode the output."""
        self.wait(timeout)
        responses = at_every_party(
            [
                lambda e=e: e.request("GET", f"/v1/jobs/{self.id}/result")  # type: ignore[misc]
                for e in self._executions
            ]
        )
        plain = combine_results(responses)["result"]
        frame = decode_frame(plain, self._codecs())
        return self._post_process(frame)

    def _codecs(self) -> dict[str, KeyCodec]:
        codecs: dict[str, KeyCodec] = {}
        for column, coding in self.record.decode.items():
            if coding["kind"] == "domain" and coding.get("values") is not None:
                codecs[column] = KeyCodec.for_domain(coding["values"])
            elif coding["kind"] == "hash" and self._hash_key is not None:
                bits = int(coding["bits"])
                seen = self._dictionary.load(bits)
                codecs[column] = KeyCodec(bits, hash_key=self._hash_key, seen=seen)
        return codecs

    def _post_process(self, frame: pd.DataFrame) -> pd.DataFrame:
        sort = self.record.post.get("sort_by")
        if sort:
            frame = frame.sort_values(sort, ascending=not self.record.post.get("descending"))
        return frame.reset_index(drop=True)
