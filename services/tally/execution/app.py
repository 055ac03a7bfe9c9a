"""The execution service's REST API (FastAPI) and its PartyControl gRPC server.

    uvicorn --factory tally.execution.app:create_app --port 8300

Routes (errors are ``{"error": code, "detail": text}``):

* ``POST /v1/jobs``: submit a job (the same id and spec at every party);
* ``GET /v1/jobs/{id}``: phase, stage k of K, restarts, timings, bytes, rounds, reason
  (``?wait=S``: answered at the next change, at most S seconds later);
* ``GET /v1/jobs/{id}/result``: this party's shares of the ``open`` outputs, for
  their recipients only (the client adds every party's shares: nothing is opened
  to any party);
* ``DELETE /v1/jobs/{id}``: cancel everywhere;
* ``POST /v1/internal/jobs/{id}/workers/{k}/attach`` and ``PUT
  /v1/internal/jobs/{id}/workers/{k}``: external workers (``workers=external``,
  Kubernetes pods) fetch their job and report their status, with their job's worker
  token (:mod:`tally.execution.worker_tokens`), which the operator gets from
  ``POST /v1/internal/jobs/{id}/worker-token`` with this party's service credential;
* ``/healthz``, ``/readyz``, ``/metrics``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Query, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, Histogram
from prometheus_client.exposition import generate_latest
from pydantic import BaseModel, Field

from tally.common.audit import audit
from tally.common.audit import configure as configure_audit
from tally.common.auth import Principal, TokenAuthenticator, require_role
from tally.common.errors import ApiError, error_responses, install_error_handlers
from tally.common.job_ids import JOB_NAME_MAX, SCOPE_DIGITS, job_name, scoped_for, scoped_job_id
from tally.common.limits import BodyLimitMiddleware
from tally.common.oidc import make_authenticator
from tally.common.tls import party_name
from tally.execution.checkpoint import decode_state
from tally.execution.control import ControlClient, start_control_server
from tally.execution.gateway import Gateway, Resolver, host_port, parse_route
from tally.execution.jobs import FINAL_PHASES, JobCreate, JobPublic, WorkerStatus, encode_array
from tally.execution.ports import InputError
from tally.execution.programs import dataset_ids
from tally.execution.service import JobConflict, JobManager, Superseded
from tally.execution.settings import ExecutionSettings, load_tls
from tally.execution.worker import build_stores
from tally.execution.worker_tokens import WorkerPrincipal, WorkerTokens, is_worker_token

log = logging.getLogger(__name__)

PHASES = ("Pending", "Reserving", "Running", "Succeeded", "Failed", "Cancelled")


class _Metrics:
    def __init__(self, manager: JobManager) -> None:
        self.manager = manager
        self.registry = CollectorRegistry(auto_describe=True)
        self.jobs = Gauge("tally_jobs", "jobs by phase", ["phase"], registry=self.registry)
        self.stage_seconds = Histogram(
            "tally_job_stage_seconds",
            "duration of finished job stages",
            ["program"],
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
            registry=self.registry,
        )
        self.round_bytes = Histogram(
            "tally_partylink_bytes_per_round",
            "bytes sent per round (average over a stage), per party",
            buckets=(1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9),
            registry=self.registry,
        )

    def render(self) -> bytes:
        counts = self.manager.stats()
        for phase in PHASES:
            self.jobs.labels(phase).set(counts.get(phase, 0))
        observed, self.manager.observed = self.manager.observed, []
        for program, seconds, per_round in observed:
            self.stage_seconds.labels(program).observe(seconds)
            self.round_bytes.observe(per_round)
        return generate_latest(self.registry)


def current_principal(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> Principal:
    """The caller, from its bearer token (a worker token reaches its job's worker routes only)."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() == "bearer" and is_worker_token(token.strip()):
        workers: WorkerTokens = request.app.state.worker_tokens
        return workers.authenticate(token.strip(), request.method, request.url.path)
    authenticator: TokenAuthenticator = request.app.state.authenticator
    return authenticator.authenticate(authorization)


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]

MAX_WAIT_S = 60.0
"""Longest a ``GET /v1/jobs/{id}?wait=`` is held open."""


class WorkerAttach(BaseModel):
    """An external worker announcing itself."""

    pod: str = Field(min_length=1, max_length=253, description="the pod's name (unique per pod)")


def _resolver(party: int, manager: JobManager, control_port: int) -> Resolver:
    """Where the gateway sends a connection by its server name (see tally.execution.gateway)."""

    def resolve(name: str) -> tuple[str, int] | None:
        if name in ("", party_name(party)):  # PartyControl ("": plaintext development mode)
            return ("127.0.0.1", control_port)
        route = parse_route(name, party)
        if route is None:
            return None
        address = manager.route(route[1], route[0])
        return host_port(address) if address else None

    return resolve


def create_app(settings: ExecutionSettings | None = None) -> FastAPI:
    """The execution service of one party."""
    settings = settings or ExecutionSettings()
    configure_audit(settings.audit_file)
    for module in settings.program_modules:
        __import__(module)
    tls = load_tls(settings)
    blobs, inputs, _, tuples = build_stores(settings)
    authenticator = make_authenticator(settings.tokens, settings.env, settings)
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        control = ControlClient(settings.party, settings.peer_directory(), tls)
        manager = JobManager(settings, inputs, tuples, control)
        server, grpc_port = await start_control_server(
            manager, tls, settings.parties, "127.0.0.1:0"
        )
        gateway = Gateway(
            (settings.control_host, settings.endpoint_port),
            _resolver(settings.party, manager, grpc_port),
        )
        gateway.start()
        state.update(manager=manager, metrics=_Metrics(manager), server=server)
        orphans = asyncio.create_task(manager.release_orphans())
        try:
            yield
        finally:
            orphans.cancel()
            await manager.shutdown()
            await asyncio.to_thread(gateway.close)
            await server.stop(grace=1.0)
            await control.close()

    app = FastAPI(
        title="Tally execution service",
        version="0.1.0",
        description="Runs analytics jobs across the parties over PartyLink (gRPC).",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, json_limit=settings.max_body_bytes)
    app.state.authenticator = authenticator
    app.state.worker_tokens = worker_tokens = WorkerTokens()

    def manager() -> JobManager:
        value: JobManager = state["manager"]
        return value

    def find(job_id: str, who: Principal) -> Any:
        """The job ``job_id`` names for ``who``: their own job of that name, else by full id.

        The party's service credential may also name a job by its name alone when one
        submitter has a job of that name here (two: a 409 asking for the full id).
        """
        jobs = manager().jobs
        if not who.service:
            return jobs.get(scoped_job_id(who.identity, job_id)) or jobs.get(job_id)
        if job_id in jobs:
            return jobs[job_id]
        named = [r for i, r in jobs.items() if job_name(i) == job_id and scoped_for(i, r.submitter)]
        if len(named) > 1:
            raise ApiError(
                409,
                "ambiguous",
                f"{len(named)} submitters have a job named {job_id!r} here: give its full id",
            )
        return named[0] if named else None

    def visible(job_id: str, who: Principal) -> Any:
        record = find(job_id, who)
        readers = set()
        if record is not None:
            readers = {r for o in record.spec.outputs.values() for r in o.recipients}
        # the party's own service credential (its operator) follows and cancels any job
        if record is None or not (
            who.service or who.identity == record.submitter or who.identity in readers
        ):
            raise ApiError(404, "not_found", f"no job {job_id!r} visible to you")
        return record

    @app.post("/v1/jobs", status_code=201, responses=error_responses(401, 403, 404, 409, 422))
    async def submit_job(spec: JobCreate, who: CurrentPrincipal, response: Response) -> JobPublic:
        """Submit a job; it starts once every party accepted the same spec."""
        if who.service:
            raise ApiError(
                403,
                "forbidden",
                "a service credential cannot submit jobs: submit with the analyst's own token",
            )
        require_role(who, "analyst", "submitting a job")
        if not scoped_for(spec.id, who.identity):
            if len(spec.id) > JOB_NAME_MAX:
                raise ApiError(
                    422,
                    "validation_error",
                    f"job id {spec.id!r}: at most {JOB_NAME_MAX} characters (each party "
                    f"appends {SCOPE_DIGITS + 1} that scope it to you)",
                )
            spec = spec.model_copy(update={"id": scoped_job_id(who.identity, spec.id)})
        try:
            stages = await asyncio.to_thread(manager().validate, spec, who.identity)
            record, created = manager().submit(spec, who.identity, stages)
        except InputError as error:
            audit(
                "job.submit",
                "refused",
                who.identity,
                job=spec.id,
                program=spec.program,
                code=error.code,
            )
            raise ApiError(error.status, error.code, error.detail) from None
        except JobConflict as error:
            raise ApiError(409, "job_conflict", str(error)) from None
        recipients = sorted({r for o in spec.outputs.values() for r in o.recipients})
        audit(
            "job.submit",
            identity=who.identity,
            job=spec.id,
            program=spec.program,
            inputs=",".join(sorted({d for v in spec.inputs.values() for d in dataset_ids(v)})),
            recipients=",".join(recipients),
            created=created,
        )
        if not created:
            response.status_code = 200
        return record.public()

    @app.get("/v1/jobs/{job_id}", responses=error_responses(401, 404, 409, 422))
    async def get_job(
        job_id: str,
        who: CurrentPrincipal,
        wait: Annotated[float, Query(ge=0, le=MAX_WAIT_S)] = 0,
    ) -> JobPublic:
        """A job's phase and progress at this party.

        With ``wait`` (seconds), a job that has not ended is answered when its phase or
        progress next changes here, or after ``wait`` seconds: a client follows a job
        with one request per change instead of polling.
        """
        record = visible(job_id, who)
        if wait and record.phase not in FINAL_PHASES:
            await manager().changed(record.spec.id, wait)
        return record.public()  # type: ignore[no-any-return]

    @app.delete("/v1/jobs/{job_id}", responses=error_responses(401, 403, 404, 409))
    async def cancel_job(job_id: str, who: CurrentPrincipal) -> JobPublic:
        """Cancel a job at every party."""
        record = visible(job_id, who)
        if who.identity != record.submitter and not who.service:
            raise ApiError(403, "forbidden", "only the submitter may cancel a job")
        if record.phase not in FINAL_PHASES:
            await manager().cancel(record.spec.id)
        return record.public()  # type: ignore[no-any-return]

    def external_worker(job_id: str, who: Principal) -> None:
        """Only the job's own worker token (or the party's service credential)."""
        if isinstance(who, WorkerPrincipal):
            if who.job_id != job_id:  # authenticate() refuses it already; twice is cheap
                raise ApiError(403, "out_of_scope", "a worker token reaches its own job only")
        elif not who.service:
            raise ApiError(403, "forbidden", "only this party's service credential may do this")
        if settings.workers != "external":
            raise ApiError(409, "not_external", "this service runs its own workers")
        if job_id not in manager().jobs:
            raise ApiError(404, "not_found", f"no job {job_id!r}")

    @app.post(
        "/v1/internal/jobs/{job_id}/worker-token",
        status_code=201,
        responses=error_responses(401, 403, 404, 409),
    )
    async def issue_worker_token(job_id: str, who: CurrentPrincipal) -> dict[str, str]:
        """A credential for the job's pods: they attach and report that job only (service
        credential; the operator puts it in the pods' Secret)."""
        if not who.service:  # a worker token is no service credential
            raise ApiError(
                403, "forbidden", "worker tokens are issued to the party's service credential"
            )
        external_worker(job_id, who)
        return {"job_id": job_id, "token": worker_tokens.issue(job_id, who)}

    @app.post(
        "/v1/internal/jobs/{job_id}/workers/{worker}/attach",
        responses=error_responses(401, 403, 404, 409, 422),
    )
    async def attach_worker(
        job_id: str, worker: int, body: WorkerAttach, who: CurrentPrincipal
    ) -> dict[str, Any]:
        """An external worker starts: the job record and the partition's last status."""
        external_worker(job_id, who)
        try:
            record, previous = manager().attach(job_id, worker, body.pod)
        except IndexError as error:
            raise ApiError(422, "bad_worker", str(error)) from None
        credentials = manager().worker_credential(job_id)
        return {
            "record": record.model_dump(mode="json"),
            "previous": previous.model_dump(mode="json") if previous is not None else None,
            # the job's own credentials: its inputs read and results written at the
            # secret-store, its own reservations at the tuple-service; no more
            "inputs_token": credentials.inputs if credentials else None,
            "tuples_token": credentials.tuples if credentials else None,
        }

    @app.put(
        "/v1/internal/jobs/{job_id}/workers/{worker}",
        responses=error_responses(401, 403, 404, 409, 422),
    )
    async def report_worker(
        job_id: str, worker: int, status: WorkerStatus, who: CurrentPrincipal
    ) -> dict[str, str]:
        """An external worker's status; the reply carries the job's phase here."""
        external_worker(job_id, who)
        try:
            phase = manager().report(job_id, worker, status)
        except IndexError as error:
            raise ApiError(422, "bad_worker", str(error)) from None
        except Superseded as error:
            raise ApiError(409, "superseded", str(error)) from None
        return {"phase": phase}

    @app.get("/v1/jobs/{job_id}/result", responses=error_responses(401, 403, 404, 409))
    def get_result(job_id: str, who: CurrentPrincipal) -> dict[str, Any]:
        """This party's shares of the job's opened outputs (recipients only)."""
        record = visible(job_id, who)
        job_id = record.spec.id
        mine = [n for n, o in record.spec.outputs.items() if o.kind == "open"]
        mine = [n for n in mine if who.identity in record.spec.outputs[n].recipients]
        if not mine:
            raise ApiError(403, "forbidden", "you are not a recipient of an opened output")
        if record.phase != "Succeeded":
            raise ApiError(409, "not_ready", f"the job is {record.phase}")
        audit("job.result", identity=who.identity, job=job_id, outputs=",".join(mine))
        outputs = {}
        for name in mine:
            parts = []
            for worker in range(record.spec.partitions):
                table = decode_state(blobs.get(f"results/{job_id}/{name}/w{worker}"))
                parts.append(
                    {
                        "columns": {
                            key[4:]: encode_array(values)
                            for key, values in table.arrays.items()
                            if key.startswith("col:")
                        },
                        "valid": encode_array(table.arrays["valid"]),
                    }
                )
            outputs[name] = {
                "specs": table.public["specs"],
                "derived": table.public["derived"],
                "order": table.public["order"],
                "partitions": parts,
            }
        return {"job_id": job_id, "party": settings.party, "outputs": outputs}

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/readyz", responses=error_responses(503))
    def readyz() -> dict[str, str]:
        """The blob store is usable and the PartyControl server is serving."""
        try:
            blobs.ping()
        except Exception as error:  # the reason goes to the log: it names hosts
            log.warning("readiness: the blob store is not usable: %s", error)
            raise ApiError(503, "unavailable", "the blob store is not reachable") from None
        if "server" not in state:
            raise ApiError(503, "unavailable", "PartyControl server not started")
        return {"status": "ready"}

    @app.get("/metrics", response_class=Response)
    def metrics(request: Request) -> Response:
        """Prometheus metrics: jobs by phase, stage durations, bytes per round."""
        return Response(state["metrics"].render(), media_type=CONTENT_TYPE_LATEST)

    return app
