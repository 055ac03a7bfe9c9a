"""An execution worker that Kubernetes starts (``TALLY_EXECUTION_WORKERS=external``).

    python -m tally.execution.pod          (or: python -m tally.execution.worker --external)

The operator's Indexed Job runs one pod per partition.  The execution service of the
party accepted the job (REST, spec-hash agreement with the peers, tuple reservation)
but starts no process; each pod:

1. reads its job and partition from the environment: ``TALLY_JOB_ID``, and
   ``TALLY_PARTITION`` or ``JOB_COMPLETION_INDEX`` (set by Kubernetes for Indexed
   Jobs); the party's settings are the ordinary ``TALLY_EXECUTION_*`` variables,
   with ``TALLY_EXECUTION_URL`` (the service) and ``TALLY_EXECUTION_WORKER_TOKEN``
   (the job's worker token, :mod:`tally.execution.worker_tokens`: this job's worker
   routes only);
2. attaches to the job at the service (``POST /v1/internal/jobs/{id}/workers/{k}/attach``),
   waiting while the job is still Pending or Reserving; a pod that replaces an
   earlier pod of the same partition is counted as a restart by the service;
3. runs :class:`tally.execution.worker.Worker` unchanged, except that its status goes to
   the service (``PUT /v1/internal/jobs/{id}/workers/{k}``, on every change and as a
   heartbeat: peers dial only workers heard from within ``WORKER_STALE_S``) and that
   the tuple epochs it opens are kept next to its checkpoints in the party's blob
   store.  Checkpoints are in that blob store already (S3 in a cluster), so a
   replacement pod on another node resumes from the newest stage every party holds
   and never reopens a tuple epoch.

Exit codes: 0 done; 3 failed for good (bad configuration, the job failed or was
cancelled: the Job's ``podFailurePolicy`` fails at once); 4 another pod holds the
partition now.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr, ValidationError

from tally.common.blobstore import BlobNotFound, BlobStore
from tally.common.https import client_context
from tally.execution.jobs import FINAL_PHASES, JobFiles, JobRecord, WorkerStatus
from tally.execution.ledger import TupleLedger
from tally.execution.ports import TupleProvider
from tally.execution.settings import ExecutionSettings
from tally.execution.worker import FAILED_EXIT, Worker
from tally.mpc.tuples import TupleSource

log = logging.getLogger("tally.execution.pod")

SUPERSEDED_EXIT = 4
FINAL_REPORT_S = 60.0
"""How long a worker keeps trying to deliver its final status (Succeeded or Failed)."""


class JobGone(Exception):
    """The service does not know the job (any more)."""


class Superseded(Exception):
    """Another pod has taken this partition over."""


def partition_from_env(env: Mapping[str, str]) -> int:
    """The pod's partition: ``TALLY_PARTITION``, else ``JOB_COMPLETION_INDEX``."""
    for name in ("TALLY_PARTITION", "JOB_COMPLETION_INDEX"):
        value = env.get(name, "").strip()
        if value:
            if not value.isdigit():
                raise ValueError(f"{name}={value!r} is not a partition index")
            return int(value)
    raise ValueError("set TALLY_PARTITION or JOB_COMPLETION_INDEX (the pod's completion index)")


class ServiceClient:
    """The intra-party routes of this party's execution service."""

    def __init__(self, url: str, token: str, timeout: float = 10.0, ca: Path | None = None) -> None:
        self._http = httpx.Client(
            base_url=url.rstrip("/"),
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
            verify=client_context(ca),
            trust_env=False,
        )
        self.inputs_token: str | None = None
        """The job's secret-store credential, from the last attach (None: local inputs)."""
        self.tuples_token: str | None = None
        """The job's tuple-service credential, from the last attach (None: none)."""

    def close(self) -> None:
        self._http.close()

    def _path(self, job_id: str, worker: int) -> str:
        return f"/v1/internal/jobs/{job_id}/workers/{worker}"

    def attach(self, job_id: str, worker: int, pod: str) -> tuple[JobRecord, WorkerStatus | None]:
        response = self._http.post(f"{self._path(job_id, worker)}/attach", json={"pod": pod})
        if response.status_code == 404:
            raise JobGone(f"the execution service does not know job {job_id!r}")
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        self.inputs_token = body.get("inputs_token")
        self.tuples_token = body.get("tuples_token")
        previous = body.get("previous")
        return (
            JobRecord.model_validate(body["record"]),
            WorkerStatus.model_validate(previous) if previous is not None else None,
        )

    def report(self, job_id: str, worker: int, status: WorkerStatus) -> str:
        response = self._http.put(
            self._path(job_id, worker), content=status.model_dump_json(), headers=_JSON
        )
        if response.status_code == 404:
            raise JobGone(f"the execution service does not know job {job_id!r}")
        if response.status_code == 409 and _code(response) == "superseded":
            raise Superseded(_detail(response))
        response.raise_for_status()
        return str(response.json()["phase"])


_JSON = {"Content-Type": "application/json"}


def _code(response: httpx.Response) -> str:
    try:
        return str(response.json().get("error", ""))
    except ValueError:
        return ""


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail", response.text))
    except ValueError:
        return response.text


class ServiceJobFiles(JobFiles):
    """:class:`JobFiles` whose record and status live at the execution service.

    The record and the partition's previous status come from the attach; every status
    the worker saves is sent to the service, and the latest one again every
    ``heartbeat_s`` from a background thread.  When the service says the job is over
    (Failed or Cancelled) or another pod holds the partition, the process exits.
    """

    def __init__(
        self,
        client: ServiceClient,
        state_dir: Path,
        job_id: str,
        record: JobRecord,
        previous: WorkerStatus | None,
        heartbeat_s: float,
        exit: Callable[[int], None] = os._exit,
    ) -> None:
        super().__init__(state_dir, job_id)
        self._client = client
        self._record = record
        self._previous = previous
        self._heartbeat_s = heartbeat_s
        self._exit = exit
        self._lock = threading.Lock()
        self._latest: tuple[int, WorkerStatus] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="heartbeat", daemon=True)

    def load_record(self) -> JobRecord:
        return self._record

    def load_worker(self, worker: int) -> WorkerStatus | None:
        return self._previous

    def save_worker(self, worker: int, status: WorkerStatus) -> None:
        status.updated = time.time()
        copy = status.model_copy(deep=True)
        self._latest = (worker, copy)
        final = copy.phase in ("Succeeded", "Failed")
        deadline = time.monotonic() + (FINAL_REPORT_S if final else 0.0)
        while True:
            try:
                self._send(worker, copy)
                return
            except httpx.HTTPError as error:
                if time.monotonic() >= deadline:
                    log.warning("could not report to the execution service: %s", error)
                    return
                time.sleep(1.0)

    def _send(self, worker: int, status: WorkerStatus | None = None) -> None:
        """Send ``status``, or (heartbeat) the latest one; never an older after a newer one."""
        with self._lock:
            if status is None:
                if self._latest is None:
                    return
                worker, status = self._latest
            try:
                phase = self._client.report(self.job_id, worker, status)
            except Superseded as error:
                log.error("%s: stopping", error)
                self._exit(SUPERSEDED_EXIT)
                return
            except JobGone as error:
                log.error("%s: stopping", error)
                self._exit(FAILED_EXIT)
                return
        if phase in FINAL_PHASES and phase != "Succeeded" and status.phase != "Failed":
            log.error("job %s is %s at the execution service: stopping", self.job_id, phase)
            self._exit(FAILED_EXIT)

    def _beat(self) -> None:
        while not self._stop.wait(self._heartbeat_s):
            try:
                self._send(0)
            except httpx.HTTPError as error:
                log.warning("heartbeat to the execution service failed: %s", error)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self._heartbeat_s + 15.0)


class DurableEpochs:
    """A ``TupleProvider`` whose opened tuple epochs survive the pod (DESIGN §7).

    The ledger of epochs (:mod:`tally.execution.ledger`) is a local file, and a
    replacement pod starts on an empty disk.  So the epochs file is copied to the blob
    store after every epoch is opened — before any tuple of it is drawn — and merged
    back before a mesh forms: a resumed stage never reopens an epoch this party used.
    """

    def __init__(self, inner: TupleProvider, blobs: BlobStore, root: Path) -> None:
        self.inner = inner
        self.blobs = blobs
        self.root = Path(root)
        self.leads = inner.leads

    @staticmethod
    def key(job_id: str, worker: int) -> str:
        """Beside the worker's checkpoints (removed with them when the job is done)."""
        return f"checkpoints/{job_id}/w{worker}/tuple-epochs"

    def _restore(self, job_id: str, worker: int) -> None:
        ledger = TupleLedger(self.root, job_id, worker)
        try:
            stored = [int(e) for e in self.blobs.get(self.key(job_id, worker)).split()]
        except BlobNotFound:
            return
        epochs = sorted(set(ledger.epochs()) | set(stored))
        ledger.dir.mkdir(parents=True, exist_ok=True)
        ledger.epochs_path.write_text("".join(f"{e}\n" for e in epochs))

    def reserve(self, job_id: str, workers: int, needs: Mapping[str, int]) -> None:
        self.inner.reserve(job_id, workers, needs)

    def release(self, job_id: str) -> None:
        self.inner.release(job_id)

    def next_free(self, job_id: str, worker: int) -> dict[str, int]:
        self._restore(job_id, worker)
        return self.inner.next_free(job_id, worker)

    def open(
        self,
        job_id: str,
        worker: int,
        start: Mapping[str, int],
        interrupted: Callable[[], BaseException | None] | None = None,
    ) -> TupleSource:
        self._restore(job_id, worker)
        source = self.inner.open(job_id, worker, start, interrupted)
        epochs = TupleLedger(self.root, job_id, worker).epochs()
        self.blobs.put(self.key(job_id, worker), "".join(f"{e}\n" for e in epochs).encode())
        return source


class PodWorker(Worker):
    """:class:`Worker` as a pod: status to the service, tuple epochs in the blob store."""

    def __init__(self, settings: ExecutionSettings, files: JobFiles, index: int, pod: str) -> None:
        super().__init__(settings, files, index)
        # A previous pod's status is carried on (progress, timings), not its address.
        self.status.pod, self.status.phase, self.status.address = pod, "Starting", ""
        self.tuples = DurableEpochs(self.tuples, self.blobs, settings.state_dir)


def _attach(
    client: ServiceClient, job_id: str, worker: int, pod: str, wait_s: float
) -> tuple[JobRecord, WorkerStatus | None] | int:
    """Attach once the job runs; an exit code when there is nothing to run."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            record, previous = client.attach(job_id, worker, pod)
            if record.phase == "Running":
                return record, previous
            if record.phase == "Succeeded":
                log.info("job %s already succeeded", job_id)
                return 0
            if record.phase in FINAL_PHASES:
                log.error("job %s is %s: %s", job_id, record.phase, record.reason)
                return FAILED_EXIT
            problem = f"job {job_id} is {record.phase}"
        except JobGone as error:
            log.error("%s", error)
            return FAILED_EXIT
        except httpx.HTTPStatusError as error:
            if error.response.status_code in (401, 403, 409, 422):
                log.error("the execution service refuses this worker: %s", _detail(error.response))
                return FAILED_EXIT
            problem = f"the execution service answers {error.response.status_code}"
        except httpx.HTTPError as error:
            problem = f"the execution service is unreachable ({error})"
        if time.monotonic() > deadline:
            log.error("gave up after %.0f s: %s", wait_s, problem)
            return FAILED_EXIT
        time.sleep(0.5)


def load_settings(env: Mapping[str, str]) -> ExecutionSettings:
    """The party's settings; the state directory defaults to a temporary one (emptyDir)."""
    settings = ExecutionSettings()
    if "TALLY_EXECUTION_STATE_DIR" not in env:
        state = Path(tempfile.gettempdir()) / "tally-worker"
        settings = settings.model_copy(update={"state_dir": state})
    if not settings.url or not settings.worker_token.get_secret_value():
        raise ValueError(
            "an external worker needs TALLY_EXECUTION_URL (this party's execution service) "
            "and TALLY_EXECUTION_WORKER_TOKEN (the job's worker token there)"
        )
    return settings


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python -m tally.execution.pod`` (everything from the environment)."""
    args = sys.argv[1:] if argv is None else argv
    if args:
        print("usage: python -m tally.execution.pod  (configured by environment)", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    env = os.environ
    try:
        job_id = env.get("TALLY_JOB_ID", "")
        if not job_id:
            raise ValueError("set TALLY_JOB_ID")
        index = partition_from_env(env)
        settings = load_settings(env)
        for module in settings.program_modules:
            __import__(module)
    except (ValueError, ValidationError, ImportError) as error:
        log.error("bad configuration: %s", error)
        return FAILED_EXIT
    pod = env.get("TALLY_POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"
    client = ServiceClient(
        settings.url, settings.worker_token.get_secret_value(), ca=settings.rest_ca
    )
    try:
        wait_s = settings.accept_timeout_s + settings.tuple_wait_s
        attached = _attach(client, job_id, index, pod, wait_s)
        if isinstance(attached, int):
            return attached
        record, previous = attached
        update = {}  # the job's own credentials, never the service's
        if client.inputs_token:
            update["secret_store_token"] = SecretStr(client.inputs_token)
        if client.tuples_token:
            update["tuples_token"] = SecretStr(client.tuples_token)
        settings = settings.model_copy(update=update)
        files = ServiceJobFiles(
            client, settings.state_dir, job_id, record, previous, settings.worker_heartbeat_s
        )
        files.start()
        try:
            log.info("job %s partition %d: pod %s attached", job_id, index, pod)
            return PodWorker(settings, files, index, pod).run()
        finally:
            files.stop()
    finally:
        client.close()


if __name__ == "__main__":
    raise SystemExit(main())
