"""The tuple-service's REST API: pools, reservations, binary tuple streams, health and metrics.

Every route needs ``Authorization: Bearer <token>`` with a token from
``TALLY_TUPLES_TOKENS`` (a 401 with a JSON error body otherwise), except the probes
and the docs in ``OPEN_PATHS``: routes are protected by default, so a route added
later cannot be left open by mistake.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.exposition import generate_latest
from pydantic import BaseModel, Field

from tally.common.audit import configure as configure_audit
from tally.common.auth import Principal, TokenAuthenticator, require_role
from tally.common.errors import ApiError, error_responses, install_error_handlers
from tally.common.limits import BodyLimitMiddleware
from tally.common.metrics import HttpMetrics, MetricsMiddleware
from tally.common.oidc import make_authenticator
from tally.mpc.offline.layout import Kind, parse_kind
from tally.tuples import job_tokens
from tally.tuples.job_tokens import JobTokenCreate, JobTokenPublic
from tally.tuples.node import TupleNode, ranges
from tally.tuples.store import SHUFFLE, ReservationError, ReservationSpec, TupleReuse

log = logging.getLogger(__name__)


class PoolPublic(BaseModel):
    """One pool's telemetry at this party."""

    kind: str
    available: int
    reserved: int
    consumed: int
    low_water: int
    generated: int
    served: int
    generation_per_second: float
    consumption_per_second: float


class GenerateCreate(BaseModel):
    """Generate at least ``tuples`` tuples of the kind now (leader only)."""

    tuples: int = Field(gt=0)


class ReservationCreate(BaseModel):
    """A job's tuple needs: tuples per kind."""

    job_id: str = Field(min_length=1, max_length=200)
    tuples: dict[str, int]
    generate_missing: bool = False
    reservation_id: str | None = Field(
        default=None,
        pattern="^[0-9a-f]{32}$",
        description="client-chosen id (32 hex digits): sending it again returns the existing "
        "reservation unchanged (200) instead of reserving more",
    )


class ReservationPublic(BaseModel):
    """A reservation as this party holds it."""

    reservation_id: str
    job_id: str
    state: str
    session: str
    kinds: dict[str, dict[str, object]]


def get_node(request: Request) -> TupleNode:
    node: TupleNode = request.app.state.node
    return node


NodeDep = Annotated[TupleNode, Depends(get_node)]

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/docs", "/openapi.json"})
"""Routes served without a token: probes, Prometheus and the API docs (no tuples, no ids)."""

_bearer = HTTPBearer(auto_error=False, description="a token from TALLY_TUPLES_TOKENS")


async def require_token(
    request: Request,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Every route outside ``OPEN_PATHS`` needs a valid bearer token (401 otherwise) whose
    scopes cover it (403): ``tuples`` for reservations, tuple and shuffle shares and
    generation, ``monitoring`` (or ``tuples``) for the pools and link views.  A job
    token (:mod:`tally.tuples.job_tokens`) reaches its job's reservations only."""
    if request.url.path in OPEN_PATHS:
        return
    scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
    if scheme.lower() == "bearer" and job_tokens.is_job_token(token.strip()):
        node: TupleNode = request.app.state.node
        request.state.principal = await run_in_threadpool(
            job_tokens.authenticate, node.store, token.strip(), request.method, request.url.path
        )
        return
    auth: TokenAuthenticator = request.app.state.auth
    principal = auth.authenticate(request.headers.get("authorization"))
    needed = scope_of(request.method, request.url.path)
    if not (principal.allows(needed) or (needed == "monitoring" and principal.allows("tuples"))):
        raise ApiError(
            403, "forbidden", f"this token's scopes do not cover {needed!r} ({request.url.path})"
        )
    request.state.principal = principal


def scope_of(method: str, path: str) -> str:
    """The scope a route needs: reading tuple shares is never a monitoring scope."""
    if method == "GET" and path in ("/v1/pools", "/v1/link"):
        return "monitoring"
    return "tuples"


def create_app(node: TupleNode) -> FastAPI:
    """The REST app of one party's tuple-service."""
    configure_audit(node.settings.audit_file)
    app = FastAPI(
        title="Tally tuple-service",
        version="1",
        dependencies=[Depends(require_token)],
        responses=error_responses(401),
    )
    app.state.node = node
    app.state.auth = make_authenticator(node.settings.tokens, node.settings.env, node.settings)
    metrics = HttpMetrics("tuples")
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(BodyLimitMiddleware, json_limit=node.settings.max_body_bytes)
    install_error_handlers(app)
    started = time.monotonic()

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        """The process is alive."""
        return {"status": "ok"}

    @app.get("/readyz", responses=error_responses(503))
    def readyz(node: NodeDep) -> dict[str, str]:
        """The index and blob store answer, and the leader has recovered."""
        try:
            node.store.free_tuples("triples")
            node.store.blobs.ping()
        except Exception as error:  # the reason goes to the log: it names hosts
            log.warning("readiness: storage is not reachable: %s", error)
            raise ApiError(503, "unavailable", "storage is not reachable") from None
        if node.settings.is_leader and not node.ready.is_set():
            raise ApiError(503, "unavailable", "the leader is still recovering")
        return {"status": "ready"}

    @app.get("/v1/pools")
    def pools(node: NodeDep) -> list[PoolPublic]:
        """Available, reserved and consumed tuples per kind, with generation/consumption rates."""
        return pool_telemetry(node, time.monotonic() - started)

    @app.get("/v1/link")
    def link(node: NodeDep) -> dict[str, int]:
        """Bytes this party sent to its peers while generating, and the rounds it took."""
        transports = [s.generator.transport for s in node.sessions.values()]
        return {
            "bytes_sent": sum(t.bytes_sent for t in transports if t is not None),
            "rounds": sum(t.rounds for t in transports if t is not None),
            "sessions": len(transports),
        }

    @app.get("/metrics")
    def prometheus(node: NodeDep) -> Response:
        """Pool sizes and rates, and HTTP metrics, in Prometheus text format."""
        registry = CollectorRegistry()
        gauges = {
            name: Gauge(f"tally_tuples_{name}", help_text, ["kind"], registry=registry)
            for name, help_text in [
                ("available", "free tuples per kind"),
                ("reserved", "reserved, not yet served tuples per kind"),
                ("consumed", "tuples handed out per kind (ever)"),
                ("generated_total", "tuples generated by this process per kind"),
                ("served_total", "tuples streamed by this process per kind"),
                ("consumption_per_second", "tuples served per second since start"),
            ]
        }
        for pool in pool_telemetry(node, time.monotonic() - started):
            gauges["available"].labels(pool.kind).set(pool.available)
            gauges["reserved"].labels(pool.kind).set(pool.reserved)
            gauges["consumed"].labels(pool.kind).set(pool.consumed)
            gauges["generated_total"].labels(pool.kind).set(pool.generated)
            gauges["served_total"].labels(pool.kind).set(pool.served)
            gauges["consumption_per_second"].labels(pool.kind).set(pool.consumption_per_second)
        body = generate_latest(registry) + generate_latest(metrics.registry)
        return Response(body, media_type="text/plain; version=0.0.4")

    @app.post("/v1/pools/{kind}/generate", responses=error_responses(400, 409))
    def generate(
        kind: str, body: GenerateCreate, node: NodeDep, request: Request
    ) -> dict[str, list[int]]:
        """Generate tuples of one kind at every party now (leader only; party admins and
        the party's services)."""
        principal: Principal = request.state.principal
        if not principal.service:
            require_role(principal, "party-admin", "asking for tuples to be generated")
        check_kind(kind)
        check_generation(node, kind, body.tuples)
        try:
            return {"chunk_ids": node.lead_generation(kind, body.tuples)}
        except ReservationError as error:
            raise ApiError(409, "conflict", str(error)) from error

    @app.post("/v1/reservations", status_code=201, responses=error_responses(400, 409))
    def reserve(
        body: ReservationCreate, node: NodeDep, response: Response, request: Request
    ) -> ReservationPublic:
        """Reserve a job's tuples at every party (leader only); the same chunks everywhere."""
        job_tokens.check_job(request.state.principal, body.job_id)
        for kind in body.tuples:
            if kind != SHUFFLE:
                check_kind(kind)
        if body.reservation_id is not None and node.store.reservation(body.reservation_id):
            response.status_code = 200
            return existing(node, body.reservation_id, body.job_id)
        try:
            if body.generate_missing:
                for kind, count in body.tuples.items():
                    if kind == SHUFFLE:
                        continue
                    missing = count - node.store.free_tuples(kind)
                    if missing > 0:
                        check_generation(node, kind, missing)
                        node.lead_generation(kind, missing)
            if body.reservation_id is None:
                reservation_id, _ = node.reserve(body.job_id, body.tuples)
            elif not node.reserve_once(body.reservation_id, body.job_id, body.tuples):
                response.status_code = 200  # a concurrent request with the same id won
                return existing(node, body.reservation_id, body.job_id)
            else:
                reservation_id = body.reservation_id
        except ReservationError as error:
            raise ApiError(409, "conflict", str(error)) from error
        return describe(node, reservation_id)

    @app.get("/v1/reservations")
    def list_reservations(
        node: NodeDep,
        state: Annotated[str, Query(pattern="^[a-z]+$")] = "active",
        job_id: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    ) -> list[str]:
        """Ids of this party's reservations in one state (active, pending, releasing, ...)."""
        return node.store.reservations_in([state], job_id=job_id)

    @app.get("/v1/reservations/{reservation_id}", responses=error_responses(404))
    def reservation(reservation_id: str, node: NodeDep, request: Request) -> ReservationPublic:
        """One reservation's state and chunk ranges at this party."""
        view = describe(node, reservation_id)
        job_tokens.check_job(request.state.principal, view.job_id, reservation_id)
        return view

    @app.post("/v1/reservations/{reservation_id}/release", responses=error_responses(404, 409))
    def release(reservation_id: str, node: NodeDep) -> dict[str, bool]:
        """Release a job's unconsumed tuples at every party (leader only; job failed or done)."""
        describe(node, reservation_id)
        try:
            return {"released": node.release(reservation_id)}
        except ReservationError as error:
            raise ApiError(409, "conflict", str(error)) from error

    @app.get(
        "/v1/reservations/{reservation_id}/tuples/{kind}",
        responses=error_responses(404, 409),
        response_class=StreamingResponse,
    )
    def stream_tuples(
        reservation_id: str,
        kind: str,
        node: NodeDep,
        offset: Annotated[int, Query(ge=0)],
        count: Annotated[int, Query(ge=0)],
        request: Request,
    ) -> StreamingResponse:
        """This party's shares of tuples [offset, offset + count), each section in turn (binary)."""
        parsed = check_kind(kind)
        if isinstance(request.state.principal, job_tokens.JobPrincipal):
            check_owner(node, request, reservation_id)  # the extra lookup: job tokens only
        try:
            parts = node.store.take_range(reservation_id, kind, offset, count)
        except TupleReuse as error:
            raise ApiError(409, "tuples_reused", str(error)) from error
        except ReservationError as error:
            raise ApiError(409, "conflict", str(error)) from error
        node.rates.add(node.rates.served, kind, count)
        sizes = {chunk_id: node.store.chunk_count(chunk_id) for chunk_id, _, _ in parts}

        def body() -> Iterator[bytes]:
            for section in range(len(parsed.sections)):
                for chunk_id, start, length in parts:
                    yield node.store.read_section(
                        parsed, chunk_id, sizes[chunk_id], start, length, section
                    )

        return StreamingResponse(
            body(),
            media_type="application/octet-stream",
            headers={"Content-Length": str(count * parsed.tuple_bytes)},
        )

    @app.get(
        "/v1/reservations/{reservation_id}/shuffles/{index}",
        responses=error_responses(404, 409),
        response_class=StreamingResponse,
    )
    def shuffle(
        reservation_id: str,
        index: int,
        node: NodeDep,
        rows: Annotated[int, Query(ge=0)],
        kinds: Annotated[str, Query(pattern="^[ax]+$")],
        request: Request,
    ) -> StreamingResponse:
        """Shuffle correlation number ``index`` of a reservation (hm3: derived, no traffic)."""
        found = check_owner(node, request, reservation_id)
        _, state, session_id, _ = found
        if state != "active":
            raise ApiError(409, "conflict", f"reservation {reservation_id} is {state}")
        try:  # derived in full here: an error is still a 4xx, not a cut-off stream
            parts, length = node.shuffle(reservation_id, session_id, index, rows, kinds)
        except TupleReuse as error:
            raise ApiError(409, "tuples_reused", str(error)) from error
        except ReservationError as error:
            raise ApiError(409, "conflict", str(error)) from error
        return StreamingResponse(
            iter(parts),
            media_type="application/octet-stream",
            headers={"Content-Length": str(length)},
        )

    @app.post("/v1/job-tokens", status_code=201, responses=error_responses(403))
    def issue_job_token(body: JobTokenCreate, node: NodeDep, request: Request) -> JobTokenPublic:
        """A credential for one job's workers: its own reservations only (service credential)."""
        return job_tokens.issue(
            node.store, request.state.principal, body, node.settings.max_job_token_ttl_s
        )

    @app.delete("/v1/job-tokens/{job_id}", responses=error_responses(403))
    def revoke_job_tokens(job_id: str, node: NodeDep, request: Request) -> dict[str, int]:
        """Revoke a job's worker credentials (the job has ended)."""
        return {"revoked": job_tokens.revoke(node.store, request.state.principal, job_id)}

    return app


def check_owner(
    node: TupleNode, request: Request, reservation_id: str
) -> tuple[str, str, str, ReservationSpec]:
    """The reservation (404 if unknown); a job token must belong to its job (403)."""
    found = node.store.reservation(reservation_id)
    if found is None:
        raise ApiError(404, "not_found", f"no reservation {reservation_id}")
    job_tokens.check_job(request.state.principal, found[0], reservation_id)
    return found


def check_generation(node: TupleNode, kind: str, count: int) -> None:
    """Refuse (413) a request that would generate more than ``max_generate`` tuples."""
    if count > node.settings.max_generate:
        raise ApiError(
            413,
            "too_large",
            f"generating {count} {kind} at every party is more than this service allows in "
            f"one request ({node.settings.max_generate}, max_generate)",
        )


def check_kind(kind: str) -> Kind:
    try:
        return parse_kind(kind)
    except ValueError as error:
        raise ApiError(400, "bad_request", str(error)) from error


def existing(node: TupleNode, reservation_id: str, job_id: str) -> ReservationPublic:
    """A reservation asked for again by its id: the same job gets it back, another a 409."""
    view = describe(node, reservation_id)
    if view.job_id != job_id:
        raise ApiError(409, "conflict", f"reservation id {reservation_id} belongs to another job")
    return view


def describe(node: TupleNode, reservation_id: str) -> ReservationPublic:
    found = node.store.reservation(reservation_id)
    if found is None:
        raise ApiError(404, "not_found", f"no reservation {reservation_id}")
    job_id, state, session, spec = found
    return ReservationPublic(
        reservation_id=reservation_id,
        job_id=job_id,
        state=state,
        session=session,
        kinds={
            kind: {"count": count, "ranges": [list(r) for r in ranges(ids)]}
            for kind, (count, ids) in spec.kinds.items()
        },
    )


def pool_telemetry(node: TupleNode, elapsed: float) -> list[PoolPublic]:
    stats = node.store.pool_stats()
    low_water = {pool.kind: pool.low_water for pool in node.settings.pools}
    kinds = sorted(set(stats) | set(low_water))
    out = []
    for kind in kinds:
        states = stats.get(kind, {})
        generated = node.rates.generated.get(kind, 0)
        served = node.rates.served.get(kind, 0)
        seconds = node.rates.generation_seconds.get(kind, 0.0)
        out.append(
            PoolPublic(
                kind=kind,
                available=states.get("free", 0),
                reserved=states.get("reserved", 0),
                consumed=states.get("consumed", 0),
                low_water=low_water.get(kind, 0),
                generated=generated,
                served=served,
                generation_per_second=round(generated / seconds, 1) if seconds else 0.0,
                consumption_per_second=round(served / max(elapsed, 1e-9), 3),
            )
        )
    return out
