"""The job manager of one party's execution service: agreement, reservation, workers, faults.

Per job, one asyncio task drives the phases (never any MPC work on the event loop):

* ``Pending``: ask every peer (``PartyControl.Propose``) which spec hash it accepted
  for this job id; all equal → go on; a different hash → Failed ("spec mismatch");
  a peer that does not accept within ``accept_timeout_s`` → Failed.
* ``Reserving``: the tuple reservation for all P workers (party 0 reserves each
  worker's needs, estimated by a dry plan: :mod:`tally.execution.planning`).
* ``Running``: P worker processes (:mod:`tally.execution.worker`), supervised: a
  worker killed by a signal is restarted (``restarts`` += 1, up to ``max_restarts``
  per worker) and resumes from the checkpoints; a worker that reports failure
  fails the job; all P done → Succeeded.
* With ``workers=external`` (Kubernetes) the service starts no process: the
  operator's pods (:mod:`tally.execution.pod`) attach to the job over the
  intra-party routes, report their status, and a pod that replaces another one
  counts as a restart; all P report Succeeded → Succeeded; one reports Failed → Failed.
* Failed or Cancelled: workers stopped, the reservation's unconsumed part
  released, the peers told (``PartyControl.Abandon``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

from tally.execution.control import ControlClient
from tally.execution.gateway import route_id
from tally.execution.jobs import (
    FINAL_PHASES,
    JobCreate,
    JobFiles,
    JobRecord,
    WorkerStatus,
    spec_hash,
)
from tally.execution.leases import TupleServiceProvider
from tally.execution.planning import PlanTooLarge, estimate_tuples_bounded
from tally.execution.policy import dp_charges, enforce_policies
from tally.execution.ports import (
    DatasetInfo,
    InputError,
    InputStore,
    ServiceError,
    TupleProvider,
)
from tally.execution.programs import (
    check_params,
    check_query,
    dataset_ids,
    describe_inputs,
    resolve_program,
)
from tally.execution.remote import SecretStoreDatasets, result_dataset_id
from tally.execution.settings import ExecutionSettings
from tally.execution.stages import build_stages
from tally.execution.worker import FAILED_EXIT
from tally.mpc.dp import DP
from tally.mpc.reserved import TupleServiceError
from tally.mpc.table import ColumnSpec

log = logging.getLogger(__name__)

POLL_SECONDS = 0.1


@dataclass
class WorkerCredentials:
    """A running job's own credentials, handed to its workers instead of the service's."""

    inputs: str | None = None
    """At the secret-store: the job's inputs and results (None: local inputs)."""
    tuples: str | None = None
    """At the tuple-service: the job's reservations (None: no tuple-service)."""


class JobConflict(Exception):
    """The job id exists here with another spec."""


class Superseded(Exception):
    """An external worker reports for a partition that another pod has taken over."""


def _params(spec: JobCreate) -> dict[str, Any]:
    """The program's parameters, with the job's differential privacy settings."""
    return dict(spec.params, **({"dp": spec.dp} if spec.dp else {}))


class JobManager:
    """All jobs of this party (implements the PartyControl handler)."""

    def __init__(
        self,
        settings: ExecutionSettings,
        inputs: InputStore,
        tuples: TupleProvider,
        control: ControlClient,
    ) -> None:
        self.settings = settings
        self.inputs = inputs
        self.tuples = tuples
        self.control = control
        self.jobs: dict[str, JobRecord] = {}
        self._procs: dict[tuple[str, int], subprocess.Popen[bytes]] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._restarts: dict[tuple[str, int], int] = {}
        self._finishing: set[str] = set()
        self._changes: dict[str, asyncio.Event] = {}
        self._seen: dict[tuple[str, int], tuple[int, int, int]] = {}
        self.observed: list[tuple[str, float, int]] = []
        """(program, stage seconds, bytes per round) per finished stage, for /metrics."""
        self._job_tokens: dict[str, WorkerCredentials] = {}
        """The credentials of each running job's workers (never written down)."""
        self.orphans: list[str] = []
        """Jobs found unfinished at start-up, whose tuples are still to be released."""
        self._load()

    def _load(self) -> None:
        root = self.settings.state_dir / "jobs"
        if not root.is_dir():
            return
        for path in root.iterdir():
            files = JobFiles(self.settings.state_dir, path.name)
            try:
                record = files.load_record()
            except (OSError, ValueError):
                continue
            if record.phase not in FINAL_PHASES:
                record.phase, record.reason = "Failed", "the execution service restarted mid-job"
                files.save_record(record)
                self.orphans.append(record.spec.id)
            self.jobs[record.spec.id] = record

    async def release_orphans(self) -> None:
        """Release the tuples of jobs this service failed when it restarted mid-job."""
        while self.orphans:
            job_id = self.orphans.pop()
            try:
                await asyncio.to_thread(self.tuples.release, job_id)
            except Exception as error:  # the tuple-service may be down: say so, go on
                log.warning("could not release the tuples of job %s: %s", job_id, error)
            await asyncio.to_thread(self._revoke_job_token, job_id, True)

    # -- submission ------------------------------------------------------------------------------

    def validate(self, spec: JobCreate, submitter: str) -> int:
        """Every check that needs no peer; returns the number of stages.  Raises ``InputError``."""
        program = resolve_program(spec.program, self.settings)
        if spec.partitions > self.settings.max_partitions:
            raise InputError(
                422, "bad_partitions", f"at most {self.settings.max_partitions} partitions"
            )
        if spec.dp is not None and program.name != "groupby":
            raise InputError(422, "bad_params", "dp applies to the groupby program only")
        self._check_sizes(spec)
        if spec.partitions > 1 and spec.params.get("domain") is not None:
            raise InputError(
                422,
                "bad_params",
                f"a domain over {spec.partitions} partitions would release every domain key "
                "once per partition: run it on datasets uploaded with one partition, or pad "
                "with max_groups",
            )
        described = describe_inputs(self.inputs, spec, submitter)
        budgeted = sorted({i.id for infos in described.values() for i in infos if i.dp_budget})
        if budgeted and spec.dp is None:
            raise InputError(
                422,
                "dp_required",
                f"dataset(s) {', '.join(budgeted)} carry a privacy budget: a job on them must "
                "set dp (epsilon, delta, clip bounds for every summed column)",
            )
        meta = self._worker_inputs(spec, submitter, described)
        for columns, _ in meta.values():
            check_params(program, columns, spec.params)
        check_query(program, meta, spec.params)
        try:
            staged = build_stages(program, meta, _params(spec))
        except (TypeError, ValueError, KeyError) as error:
            raise InputError(
                422, "bad_params", f"the program rejects its params: {error}"
            ) from None
        enforce_policies(spec, submitter, program, described)
        return len(staged.stages)

    def _check_sizes(self, spec: JobCreate) -> None:
        """This party's caps on what one job may ask for, before anything is computed."""
        limits = self.settings
        datasets = sum(len(dataset_ids(ids)) for ids in spec.inputs.values())
        if datasets > limits.max_input_datasets:
            raise InputError(
                422,
                "too_large",
                f"the job reads {datasets} datasets; this party allows at most "
                f"{limits.max_input_datasets} (max_input_datasets)",
            )
        domain = spec.params.get("domain")
        groups = spec.params.get("max_groups")
        asked = max(len(domain) if isinstance(domain, list) else 0, groups or 0)
        if isinstance(asked, int) and asked > limits.max_output_groups:
            raise InputError(
                422,
                "too_large",
                f"the job asks for {asked} output groups; this party allows at most "
                f"{limits.max_output_groups} (max_output_groups)",
            )
        if spec.dp is not None:
            try:
                trials = DP.from_params(spec.dp).trials
            except (TypeError, ValueError, KeyError) as error:
                raise InputError(422, "bad_params", f"dp: {error}") from None
            if trials > limits.max_dp_trials:
                raise InputError(
                    422,
                    "too_large",
                    f"dp epsilon {spec.dp.get('epsilon')} and delta {spec.dp.get('delta')} need "
                    f"{trials} noise coins per value; this party allows at most "
                    f"{limits.max_dp_trials} (max_dp_trials): raise epsilon or delta",
                )

    def _worker_inputs(
        self,
        spec: JobCreate,
        submitter: str,
        described: dict[str, list[DatasetInfo]] | None = None,
    ) -> dict[str, tuple[dict[str, ColumnSpec], int]]:
        """Per input: its column specs and the rows one worker gets (public metadata)."""
        if described is None:
            described = describe_inputs(self.inputs, spec, submitter)
        return {
            name: (
                dict(infos[0].columns),
                sum(i.rows_per_partition if spec.partitions > 1 else i.rows for i in infos),
            )
            for name, infos in described.items()
        }

    def _charge_dp(self, record: JobRecord) -> None:
        """Record the job's epsilon and delta on every input at this party's secret-store,
        which refuses it (``InputError``) when a dataset's privacy budget has not that much
        left."""
        spec = record.spec
        for dataset_id, (epsilon, delta) in dp_charges(spec).items():
            self.inputs.charge_dp(
                dataset_id, record.submitter, spec.program, spec.id, epsilon, delta
            )

    def _tuple_needs(self, record: JobRecord) -> dict[str, int]:
        """Party 0: the tuples one worker of the job will consume (a dry plan's estimate)."""
        program = resolve_program(record.spec.program, self.settings)
        meta = self._worker_inputs(record.spec, record.submitter)
        try:
            return estimate_tuples_bounded(
                program,
                meta,
                _params(record.spec),
                self.settings.parties,
                replicated=record.sharing == "replicated",
                memory_bytes=self.settings.dry_run_memory_bytes,
                timeout_s=self.settings.dry_run_timeout_s,
            )
        except PlanTooLarge as error:
            raise InputError(422, "too_large", str(error)) from None

    def submit(self, spec: JobCreate, submitter: str, stages_total: int) -> tuple[JobRecord, bool]:
        """Record a validated job and start driving it; (record, created)."""
        digest = spec_hash(spec)
        existing = self.jobs.get(spec.id)
        if existing is not None:
            if existing.spec_hash != digest:
                raise JobConflict(
                    f"job {spec.id!r} exists here with another spec (hash {existing.spec_hash})"
                )
            if existing.submitter != submitter:
                raise JobConflict(f"job {spec.id!r} exists here, submitted by another identity")
            return existing, False
        record = JobRecord(
            spec=spec,
            spec_hash=digest,
            submitter=submitter,
            stages_total=stages_total,
            sharing=self.settings.online_sharing,
            timings={"submitted": time.time()},
            workers=[WorkerStatus() for _ in range(spec.partitions)],
        )
        self.jobs[spec.id] = record
        self._files(spec.id).save_record(record)
        self._tasks[spec.id] = asyncio.create_task(self._drive(spec.id))
        return record, True

    def _files(self, job_id: str) -> JobFiles:
        return JobFiles(self.settings.state_dir, job_id)

    def _save(self, record: JobRecord) -> None:
        self._files(record.spec.id).save_record(record)
        change = self._changes.pop(record.spec.id, None)
        if change is not None:
            change.set()

    async def changed(self, job_id: str, timeout: float) -> None:
        """Return when the job's record next changes here, or after ``timeout`` seconds."""
        change = self._changes.setdefault(job_id, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(change.wait(), timeout)

    def _worker_update(self, files: JobFiles, worker: int) -> WorkerStatus | None:
        """A worker's status, or None when its file is as it was at the last look (no parse).

        File times may be coarse (a few ms), so a file written in the last second is
        read again whatever its stamp says: two writes in one tick are never missed.
        """
        try:
            info = files.worker_path(worker).stat()
        except OSError:
            return None
        key, stamp = (files.job_id, worker), (info.st_ino, info.st_mtime_ns, info.st_size)
        settled = time.time_ns() - info.st_mtime_ns > 1_000_000_000
        if settled and self._seen.get(key) == stamp:
            return None
        status = files.load_worker(worker)
        if status is not None:
            self._seen[key] = stamp
        return status

    # -- driving a job ---------------------------------------------------------------------------

    async def _drive(self, job_id: str) -> None:
        record = self.jobs[job_id]
        try:
            await self._agree(record)
            if record.phase in FINAL_PHASES or job_id in self._finishing:
                return
            if record.spec.dp is not None:
                await asyncio.to_thread(self._charge_dp, record)
            record.phase = "Reserving"
            self._save(record)
            needs = await asyncio.to_thread(self._tuple_needs, record) if self.tuples.leads else {}
            await asyncio.to_thread(self.tuples.reserve, job_id, record.spec.partitions, needs)
            record.timings["reserved"] = time.time()
            if record.phase in FINAL_PHASES or job_id in self._finishing:
                return
            await asyncio.to_thread(self._issue_job_token, record)
            record.phase = "Running"
            self._save(record)
            await self._supervise(record)
        except asyncio.CancelledError:
            raise
        except (ServiceError, TupleServiceError, InputError) as error:
            reason = error.detail if isinstance(error, InputError) else str(error)
            await self.finish(record, "Failed", reason)
        except Exception as error:  # a bug or an unreachable dependency: fail loudly
            log.exception("job %s failed", job_id)
            await self.finish(record, "Failed", f"{type(error).__name__}: {error}")

    async def _agree(self, record: JobRecord) -> None:
        job_id, digest = record.spec.id, record.spec_hash
        deadline = time.monotonic() + self.settings.accept_timeout_s
        peers = [p for p in range(self.settings.parties) if p != self.settings.party]
        while record.phase not in FINAL_PHASES and job_id not in self._finishing:
            replies = await asyncio.gather(
                *(self.control.propose(peer, job_id, digest) for peer in peers),
                return_exceptions=True,
            )
            waiting = []
            for peer, reply in zip(peers, replies, strict=True):
                if isinstance(reply, BaseException):
                    details = getattr(reply, "details", None)
                    detail = details() if callable(details) else str(reply)
                    waiting.append(f"party {peer} unreachable ({detail})")
                elif not reply.known:
                    waiting.append(f"party {peer} has not accepted it")
                elif reply.spec_hash != digest:
                    await self.finish(
                        record,
                        "Failed",
                        f"spec mismatch: party {peer} accepted job {job_id!r} with spec hash "
                        f"{reply.spec_hash}, party {self.settings.party} with {digest}",
                    )
                    return
                elif reply.phase in ("Failed", "Cancelled"):
                    await self.finish(
                        record, reply.phase, f"party {peer}: {reply.reason}", notify=False
                    )
                    return
            if not waiting:
                record.timings["accepted"] = time.time()
                return
            if time.monotonic() > deadline:
                await self.finish(
                    record,
                    "Failed",
                    f"not every party accepted the job within {self.settings.accept_timeout_s:.0f}"
                    f" s: {'; '.join(waiting)}",
                )
                return
            await asyncio.sleep(0.2)

    def _issue_job_token(self, record: JobRecord) -> None:
        """Get the job's workers their own credentials (DESIGN: least privilege).

        At the secret-store it reads the job's inputs for its submitter and program and
        writes the job's result datasets; at the tuple-service it reads and extends the
        job's own reservations.  The service's credentials never reach a worker.
        """
        spec = record.spec
        credentials = WorkerCredentials()
        if isinstance(self.inputs, SecretStoreDatasets):
            inputs = [d for v in spec.inputs.values() for d in dataset_ids(v)]
            results = [
                (result_dataset_id(spec.output_job_id(worker), name), list(target.recipients))
                for name, target in spec.outputs.items()
                if target.kind != "open"
                for worker in range(spec.partitions)
            ]
            credentials.inputs = self.inputs.issue_job_token(
                spec.id,
                record.submitter,
                spec.program,
                inputs,
                results,
                self.settings.job_token_ttl_s,
            )
        self._job_tokens[spec.id] = credentials  # revoked at the end even if the next fails
        if isinstance(self.tuples, TupleServiceProvider):
            credentials.tuples = self.tuples.issue_job_token(spec.id, self.settings.job_token_ttl_s)

    def worker_credential(self, job_id: str) -> WorkerCredentials | None:
        """The credentials of a running job's workers, or None (not running)."""
        return self._job_tokens.get(job_id)

    def _revoke_job_token(self, job_id: str, issued_before_restart: bool = False) -> None:
        if self._job_tokens.pop(job_id, None) is None and not issued_before_restart:
            return
        revokers: list[tuple[str, Any]] = []
        if isinstance(self.inputs, SecretStoreDatasets):
            revokers.append(("secret-store", self.inputs.revoke_job_tokens))
        if isinstance(self.tuples, TupleServiceProvider):
            revokers.append(("tuple-service", self.tuples.revoke_job_tokens))
        for where, revoke in revokers:
            try:
                revoke(job_id)
            except (ServiceError, TupleServiceError) as error:  # it expires anyway; say so
                log.warning("could not revoke job %s's %s credentials: %s", job_id, where, error)

    def _spawn(self, record: JobRecord, worker: int) -> None:
        files = self._files(record.spec.id)
        log_file = files.log_path(worker).open("ab")
        env = dict(os.environ)
        credentials = self._job_tokens.get(record.spec.id)
        if credentials is not None:  # the workers get the job's credentials, not the service's
            if credentials.inputs is not None:
                env["TALLY_EXECUTION_SECRET_STORE_TOKEN"] = credentials.inputs
            if credentials.tuples is not None:
                env["TALLY_EXECUTION_TUPLES_TOKEN"] = credentials.tuples
        process = subprocess.Popen(
            [sys.executable, "-m", "tally.execution.worker", str(files.dir), str(worker)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
        )
        log_file.close()
        self._procs[(record.spec.id, worker)] = process

    async def _supervise(self, record: JobRecord) -> None:
        if self.settings.workers == "external":
            await self._watch_external(record)
            return
        job_id, files = record.spec.id, self._files(record.spec.id)
        for worker in range(record.spec.partitions):
            self._spawn(record, worker)
        record.timings["started"] = time.time()
        done: set[int] = set()
        while record.phase == "Running":
            await asyncio.sleep(POLL_SECONDS)
            if job_id in self._finishing:
                return
            changed = False
            for worker in range(record.spec.partitions):
                status = self._worker_update(files, worker)
                if status is not None and status != record.workers[worker]:
                    record.workers[worker], changed = status, True
                process = self._procs.get((job_id, worker))
                code = process.poll() if process is not None else None
                if worker in done or code is None:
                    continue
                if code == 0:
                    done.add(worker)
                elif code == FAILED_EXIT:
                    status = files.load_worker(worker)
                    reason = status.reason if status else "the worker failed"
                    await self.finish(record, "Failed", reason)
                    return
                else:
                    key = (job_id, worker)
                    if self._restarts.get(key, 0) >= self.settings.max_restarts:
                        await self.finish(
                            record,
                            "Failed",
                            f"worker {worker} crashed (exit {code}) after "
                            f"{self._restarts.get(key, 0)} restarts",
                        )
                        return
                    self._restarts[key] = self._restarts.get(key, 0) + 1
                    record.restarts += 1
                    log.warning("job %s worker %d died (exit %s): restarting", job_id, worker, code)
                    self._spawn(record, worker)
                    changed = True
            if len(done) == record.spec.partitions:
                await self.finish(record, "Succeeded", "")
                return
            if changed:
                self._save(record)

    async def _watch_external(self, record: JobRecord) -> None:
        """Follow the reports of workers that Kubernetes runs (``workers=external``)."""
        job_id, files = record.spec.id, self._files(record.spec.id)
        record.timings["started"] = time.time()
        deadline = time.monotonic() + self.settings.worker_start_timeout_s
        attached: dict[int, WorkerStatus] = {}
        while record.phase == "Running":
            await asyncio.sleep(POLL_SECONDS)
            if job_id in self._finishing:
                return
            changed = False
            for worker in range(record.spec.partitions):
                status = self._worker_update(files, worker)
                if status is not None:
                    attached[worker] = status
                    if status != record.workers[worker]:
                        record.workers[worker], changed = status, True
            missing = [w for w in range(record.spec.partitions) if w not in attached]
            if missing and time.monotonic() > deadline:
                await self.finish(
                    record,
                    "Failed",
                    f"no worker attached for partitions {missing} within "
                    f"{self.settings.worker_start_timeout_s:.0f} s (are the worker pods running?)",
                )
                return
            for worker, status in sorted(attached.items()):
                if status.phase == "Failed":
                    await self.finish(record, "Failed", status.reason or f"worker {worker} failed")
                    return
            if not missing and all(s.phase == "Succeeded" for s in attached.values()):
                await self.finish(record, "Succeeded", "")
                return
            if changed:
                self._save(record)

    def attach(self, job_id: str, worker: int, pod: str) -> tuple[JobRecord, WorkerStatus | None]:
        """An external worker (pod) starts: the job and the partition's last status.

        Raises ``KeyError`` for an unknown job and ``IndexError`` for a bad partition.
        While the job runs, the pod takes the partition over: a pod other than the one
        that had it counts as a restart, and the old pod's address is forgotten.
        """
        record = self.jobs[job_id]
        if not 0 <= worker < record.spec.partitions:
            raise IndexError(f"job {job_id!r} has partitions 0..{record.spec.partitions - 1}")
        files = self._files(job_id)
        previous = files.load_worker(worker)
        if record.phase == "Running" and (previous is None or previous.pod != pod):
            if previous is not None and previous.pod:
                record.restarts += 1
                log.warning(
                    "job %s worker %d: pod %s replaces %s", job_id, worker, pod, previous.pod
                )
            status = previous.model_copy() if previous is not None else WorkerStatus()
            status.pod, status.address, status.phase = pod, "", "Starting"
            files.save_worker(worker, status)
            record.workers[worker] = status
            self._save(record)
        return record, previous

    def report(self, job_id: str, worker: int, status: WorkerStatus) -> str:
        """An external worker's status; returns the job's phase here.

        Raises ``KeyError`` (unknown job), ``IndexError`` (bad partition) and
        ``Superseded`` (another pod holds the partition now).
        """
        record = self.jobs[job_id]
        if not 0 <= worker < record.spec.partitions:
            raise IndexError(f"job {job_id!r} has partitions 0..{record.spec.partitions - 1}")
        files = self._files(job_id)
        current = files.load_worker(worker)
        if current is None or current.pod != status.pod:
            holder = current.pod if current is not None else "no pod"
            raise Superseded(f"partition {worker} of job {job_id!r} is held by {holder}")
        if record.phase not in FINAL_PHASES:
            files.save_worker(worker, status)
        return record.phase

    async def finish(self, record: JobRecord, phase: str, reason: str, notify: bool = True) -> None:
        """End a job here: stop workers, release tuples, record, and tell the peers."""
        if record.phase in FINAL_PHASES or record.spec.id in self._finishing:
            return
        self._finishing.add(record.spec.id)
        for worker in range(record.spec.partitions):
            self._seen.pop((record.spec.id, worker), None)
            await asyncio.to_thread(self._stop_worker, record.spec.id, worker)
            status = self._files(record.spec.id).load_worker(worker)
            if status is not None:
                record.workers[worker] = status
                self.observed += [
                    (record.spec.program, s, b)
                    for s, b in zip(status.stage_seconds, status.bytes_per_round, strict=False)
                ]
        try:
            await asyncio.to_thread(self.tuples.release, record.spec.id)
        except Exception as error:  # the tuple-service retries releases it has begun
            log.warning("could not release the tuples of job %s: %s", record.spec.id, error)
        await asyncio.to_thread(self._revoke_job_token, record.spec.id)
        # The phase changes last: whoever sees it final sees workers stopped, tuples released.
        record.phase, record.reason = phase, reason  # type: ignore[assignment]
        record.timings["finished"] = time.time()
        self._save(record)
        log.info("job %s %s %s", record.spec.id, phase, reason)
        if notify and phase != "Succeeded":
            peers = [p for p in range(self.settings.parties) if p != self.settings.party]
            await asyncio.gather(
                *(self.control.abandon(p, record.spec.id, phase, reason) for p in peers),
                return_exceptions=True,
            )

    def _stop_worker(self, job_id: str, worker: int) -> None:
        process = self._procs.pop((job_id, worker), None)
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5.0)

    async def cancel(self, job_id: str) -> JobRecord:
        """Cancel a job everywhere (DELETE)."""
        record = self.jobs[job_id]
        await self.finish(record, "Cancelled", "cancelled by its submitter")
        return record

    async def shutdown(self) -> None:
        """Stop every running job's workers (the service is stopping)."""
        for task in self._tasks.values():
            task.cancel()
        for job_id, worker in list(self._procs):
            await asyncio.to_thread(self._stop_worker, job_id, worker)

    # -- PartyControl handler ------------------------------------------------------------------

    def proposal(self, job_id: str) -> tuple[bool, str, str, str]:
        record = self.jobs.get(job_id)
        if record is None:
            return False, "", "", ""
        return True, record.spec_hash, record.phase, record.reason

    def locate(self, job_id: str, worker: int) -> tuple[str, str]:
        """(this party's public endpoint if the worker is up, else "", the job's phase).

        Peers dial the endpoint; its gateway routes to the worker's own address, which
        never leaves the party.
        """
        address, phase = self.worker_address(job_id, worker)
        return (self.control.endpoint(self.settings.party) if address else ""), phase

    def route(self, route: str, worker: int) -> str:
        """The local address of worker ``worker`` of the job whose route id is ``route``."""
        for job_id in list(self.jobs):
            if route_id(job_id) == route:
                return self.worker_address(job_id, worker)[0]
        return ""

    def worker_address(self, job_id: str, worker: int) -> tuple[str, str]:
        """(the worker's own address, or "" while it is not up; the job's phase)."""
        record = self.jobs.get(job_id)
        if record is None:
            return "", ""
        status = self._files(job_id).load_worker(worker)
        if self.settings.workers == "external":
            stale = self.settings.worker_stale_s
            fresh = status is not None and time.time() - status.updated < stale
            if status is not None and fresh and status.phase in ("Connecting", "Running"):
                return status.address, record.phase
            return "", record.phase
        process = self._procs.get((job_id, worker))
        if process is None or process.poll() is not None or status is None:
            return "", record.phase
        if status.pid == process.pid and status.address:
            return status.address, record.phase
        return "", record.phase

    def abandon(self, job_id: str, sender: int, phase: str, reason: str) -> bool:
        record = self.jobs.get(job_id)
        if record is None:
            return False
        final = phase if phase in ("Failed", "Cancelled") else "Failed"
        asyncio.get_running_loop().create_task(
            self.finish(record, final, f"party {sender}: {reason}", notify=False)
        )
        return True

    def stats(self) -> dict[str, Any]:
        """Jobs by phase (for /metrics)."""
        counts: dict[str, int] = {}
        for record in self.jobs.values():
            counts[record.phase] = counts.get(record.phase, 0) + 1
        return counts
