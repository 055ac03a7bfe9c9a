"""Job tokens: the credential of one job's workers at this party's secret-store.

The party's execution service asks for one when a job starts running
(``POST /v1/internal/job-tokens``, with its service credential) and hands it to the
job's workers instead of its own credential.  A token is ``tjob_`` and 32 random bytes;
only its SHA-256 is stored, with its scope:

* read: the job's input datasets, on behalf of the job's identity and for its program
  (``GET /v1/internal/datasets/{id}`` and its columns); the store still checks that
  the identity may use each of them;
* write: the job's result datasets, each with its readers and owned by that identity
  (``POST /v1/internal/datasets``, the column uploads and the commit);
* nothing else: every other route, and any dataset outside the scope, is refused
  with 403.  Every use and every refusal is audited with the job's id.

A token expires after ``ttl_s`` (at most ``max_job_token_ttl_s``) and is revoked when
the job ends (``DELETE /v1/internal/job-tokens/{job_id}``); garbage collection
removes expired and revoked tokens.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, or_, update

from tally.common.audit import audit, current_identity
from tally.common.auth import Principal, unauthorized
from tally.common.db import session_scope
from tally.common.errors import ApiError
from tally.secret_store.context import StoreContext
from tally.secret_store.models import JobToken
from tally.secret_store.schemas import JobTokenCreate, JobTokenPublic

PREFIX = "tjob_"


@dataclass(frozen=True)
class JobPrincipal(Principal):
    """A request made with a job token: the service that asked for it, and its scope."""

    job_id: str = ""
    on_behalf_of: str = ""
    """The identity the job runs for: its inputs are read for it, its results are its own."""
    program: str = ""
    inputs: frozenset[str] = frozenset()
    results: tuple[tuple[str, tuple[str, ...]], ...] = ()
    """(result dataset id, its sorted readers) for every result the job may write."""

    def readers_of(self, dataset_id: str) -> tuple[str, ...] | None:
        """The readers of a result the token may write; None when it is not one."""
        return dict(self.results).get(dataset_id)


def utcnow() -> datetime:
    """The current time, timezone-aware."""
    return datetime.now(UTC)


def is_job_token(token: str) -> bool:
    """Whether a bearer token has the shape of a job token (looked up in the database)."""
    return token.startswith(PREFIX)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def issue(ctx: StoreContext, issuer: Principal, body: JobTokenCreate) -> JobTokenPublic:
    """A new token for ``body``'s scope; only its digest is stored."""
    token = PREFIX + secrets.token_urlsafe(32)
    now = utcnow()
    ttl = min(body.ttl_s, ctx.settings.max_job_token_ttl_s)
    row = JobToken(
        digest=_digest(token),
        job_id=body.job_id,
        issued_by=issuer.identity,
        identity=body.identity,
        program=body.program,
        inputs=sorted({str(dataset_id) for dataset_id in body.inputs}),
        results={str(r.id): sorted(set(r.readers)) for r in body.results},
        created_at=now,
        expires_at=now + timedelta(seconds=ttl),
        revoked_at=None,
    )
    with session_scope(ctx.sessions) as session:
        session.add(row)
    audit(
        "job_token.issue",
        identity=issuer.identity,
        job=body.job_id,
        on_behalf_of=body.identity,
        program=body.program,
        inputs=len(row.inputs),
        results=len(row.results),
    )
    return JobTokenPublic(job_id=body.job_id, token=token, expires_at=row.expires_at)


def revoke(ctx: StoreContext, issuer: Principal, job_id: str) -> int:
    """Revoke every live token of ``job_id``; how many there were."""
    with session_scope(ctx.sessions) as session:
        revoked = session.execute(
            update(JobToken)
            .where(JobToken.job_id == job_id, JobToken.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )
        count = int(revoked.rowcount)  # type: ignore[attr-defined]
    audit("job_token.revoke", identity=issuer.identity, job=job_id, tokens=count)
    return count


def authenticate(ctx: StoreContext, token: str, now: datetime | None = None) -> JobPrincipal:
    """The principal of a live job token, else 401."""
    with session_scope(ctx.sessions) as session:
        row = session.get(JobToken, _digest(token))
    if row is None:
        raise unauthorized("invalid token")
    if row.revoked_at is not None:
        raise unauthorized(f"job token revoked: job {row.job_id} has ended")
    if (now or utcnow()) >= row.expires_at:
        raise unauthorized(f"job token of job {row.job_id} expired")
    current_identity.set(row.issued_by)
    return JobPrincipal(
        identity=row.issued_by,
        service=True,  # it acts for the service that asked for it, within its scope
        job_id=row.job_id,
        on_behalf_of=row.identity,
        program=row.program,
        inputs=frozenset(row.inputs),
        results=tuple((key, tuple(value)) for key, value in sorted(row.results.items())),
    )


def job_of(principal: Principal) -> str | None:
    """The job id of a job token's principal, for audit events; None otherwise."""
    return principal.job_id if isinstance(principal, JobPrincipal) else None


def check_issuer(principal: Principal) -> None:
    """Only the party's service credential issues and revokes job tokens (never a job token)."""
    if isinstance(principal, JobPrincipal) or not principal.service:
        raise ApiError(403, "forbidden", "job tokens are issued by the party's service credential")


def _out_of_scope(principal: JobPrincipal, dataset_id: str, detail: str) -> ApiError:
    audit(
        "job_token.refused",
        "refused",
        identity=principal.identity,
        job=principal.job_id,
        dataset=dataset_id,
        code="out_of_scope",
    )
    return ApiError(403, "out_of_scope", f"the token of job {principal.job_id} {detail}")


def check_input(principal: Principal, dataset_id: str, identity: str, program: str) -> None:
    """A job token reads only its job's inputs, for its identity and program."""
    if not isinstance(principal, JobPrincipal):
        return
    if dataset_id not in principal.inputs:
        raise _out_of_scope(
            principal, dataset_id, f"may not read dataset {dataset_id}: not an input of the job"
        )
    if identity != principal.on_behalf_of or program != principal.program:
        raise _out_of_scope(
            principal,
            dataset_id,
            f"reads for {principal.on_behalf_of} with program {principal.program} only",
        )


def check_result(
    principal: Principal,
    dataset_id: str | None,
    owner: str | None = None,
    readers: list[str] | None = None,
) -> None:
    """A job token writes only its job's results, owned by its identity, for their readers."""
    if not isinstance(principal, JobPrincipal):
        return
    if dataset_id is None:
        raise _out_of_scope(principal, "", "writes only the job's result datasets, by id")
    allowed = principal.readers_of(dataset_id)
    if allowed is None:
        raise _out_of_scope(
            principal, dataset_id, f"may not write dataset {dataset_id}: not a result of the job"
        )
    if owner is not None and owner != principal.on_behalf_of:
        raise _out_of_scope(
            principal, dataset_id, f"writes results owned by {principal.on_behalf_of} only"
        )
    if readers is not None and tuple(sorted(set(readers) - {principal.on_behalf_of})) != tuple(
        sorted(set(allowed) - {principal.on_behalf_of})
    ):
        raise _out_of_scope(
            principal,
            dataset_id,
            f"writes result {dataset_id} for readers {', '.join(allowed) or 'none'} only",
        )


def collect(ctx: StoreContext, now: datetime) -> int:
    """Remove expired and revoked tokens; how many."""
    with session_scope(ctx.sessions) as session:
        removed = session.execute(
            delete(JobToken).where(
                or_(JobToken.expires_at <= now, JobToken.revoked_at.is_not(None))
            )
        )
        return int(removed.rowcount)  # type: ignore[attr-defined]
