"""Job tokens: the credential of one job's workers at this party's tuple-service.

The party's execution service asks for one when a job starts running
(``POST /v1/job-tokens``, with its own ``tuples`` credential) and hands it to the job's
workers instead of that credential.  A token is ``tjob_`` and 32 random bytes; only
its SHA-256 is stored, with the job's id.  It allows exactly what a worker does:

* ``POST /v1/reservations`` for its own job (party 0's workers reserve the extension
  leases of a run whose estimate was short);
* ``GET /v1/reservations/{id}`` and the tuple and shuffle streams of that reservation,
  when the reservation belongs to its job.

Everything else — another job's reservations, releasing, generating on request, the
pools, the link, issuing tokens — is refused with 403 ``out_of_scope`` and audited.
So a worker that leaks its credential leaks its own job's tuple shares, never another
job's, and only until the job ends: the execution service revokes the job's tokens then
(``DELETE /v1/job-tokens/{job_id}``), and a token expires after ``ttl_s`` (at most
``max_job_token_ttl_s``) in any case.  Expired and revoked tokens are dropped whenever
a new one is issued.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, Field

from tally.common.audit import audit, current_identity
from tally.common.auth import Principal, require_role, unauthorized
from tally.common.errors import ApiError
from tally.tuples.store import ChunkStore

PREFIX = "tjob_"

_JOB_ROUTES = (
    ("POST", re.compile(r"^/v1/reservations$")),
    ("GET", re.compile(r"^/v1/reservations/[^/]+$")),
    ("GET", re.compile(r"^/v1/reservations/[^/]+/tuples/[^/]+$")),
    ("GET", re.compile(r"^/v1/reservations/[^/]+/shuffles/[^/]+$")),
)
"""The routes a job token may call (each still checks that the reservation is its job's)."""


class JobTokenCreate(BaseModel):
    """The job a worker credential is for, and how long it lives (capped)."""

    job_id: str = Field(min_length=1, max_length=200)
    ttl_s: float = Field(gt=0, le=365 * 24 * 3600.0)


class JobTokenPublic(BaseModel):
    """A new job token: shown once, stored only as its SHA-256."""

    job_id: str
    token: str
    expires_at: datetime


@dataclass(frozen=True)
class JobPrincipal(Principal):
    """A request made with a job token: the service that asked for it, and the job."""

    job_id: str = ""


def is_job_token(token: str) -> bool:
    """Whether a bearer token has the shape of a job token (looked up in the database)."""
    return token.startswith(PREFIX)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def _now() -> datetime:
    return datetime.now(UTC)


def _check_issuer(issuer: Principal, action: str) -> None:
    """Only the party's service credential (role ``service``, never a job token)."""
    if isinstance(issuer, JobPrincipal):
        raise out_of_scope(issuer, "may not issue or revoke credentials")
    require_role(issuer, "service", action)


def issue(
    store: ChunkStore, issuer: Principal, body: JobTokenCreate, max_ttl_s: float
) -> JobTokenPublic:
    """A new token for ``body.job_id``; only its digest is stored."""
    _check_issuer(issuer, "issuing job tokens")
    now = _now()
    store.collect_job_tokens(now)
    token = PREFIX + secrets.token_urlsafe(32)
    expires = now + timedelta(seconds=min(body.ttl_s, max_ttl_s))
    store.add_job_token(_digest(token), body.job_id, issuer.identity, now, expires)
    audit("job_token.issue", identity=issuer.identity, job=body.job_id)
    return JobTokenPublic(job_id=body.job_id, token=token, expires_at=expires)


def revoke(store: ChunkStore, issuer: Principal, job_id: str) -> int:
    """Revoke every live token of ``job_id``; how many there were."""
    _check_issuer(issuer, "revoking job tokens")
    count = store.revoke_job_tokens(job_id, _now())
    audit("job_token.revoke", identity=issuer.identity, job=job_id, tokens=count)
    return count


def authenticate(
    store: ChunkStore, token: str, method: str, path: str, now: datetime | None = None
) -> JobPrincipal:
    """The principal of a live job token on a route it may call; else 401 or 403."""
    found = store.job_token(_digest(token))
    if found is None:
        raise unauthorized("invalid token")
    job_id, issued_by, expires_at, revoked_at = found
    if revoked_at is not None:
        raise unauthorized(f"job token revoked: job {job_id} has ended")
    if (now or _now()) >= expires_at:
        raise unauthorized(f"job token of job {job_id} expired")
    current_identity.set(issued_by)
    principal = JobPrincipal(
        identity=issued_by, service=False, roles=frozenset(), scopes=frozenset(), job_id=job_id
    )
    if not any(method == m and pattern.match(path) for m, pattern in _JOB_ROUTES):
        raise out_of_scope(principal, "only reads and extends the job's own reservations")
    return principal


def out_of_scope(principal: JobPrincipal, detail: str, reservation: str | None = None) -> ApiError:
    """An audited 403 for a job token outside its job."""
    audit(
        "job_token.refused",
        "refused",
        identity=principal.identity,
        job=principal.job_id,
        reservation=reservation,
        code="out_of_scope",
    )
    return ApiError(403, "out_of_scope", f"the token of job {principal.job_id} {detail}")


def check_job(principal: Principal | None, job_id: str, reservation: str | None = None) -> None:
    """A job token acts only on its own job's reservations."""
    if isinstance(principal, JobPrincipal) and job_id != principal.job_id:
        raise out_of_scope(principal, "may not use another job's tuples", reservation)
