"""Worker tokens: the credential of one job's pods at this party's execution service.

With ``workers=external`` the operator asks, right after it submits a job,
``POST /v1/internal/jobs/{id}/worker-token`` (with the party's service credential) and
puts the answer in a Secret of that job's worker pods.  A worker token (``twrk_`` and
32 random bytes) reaches only the two routes of its own job's workers — attach and
status reports, ``/v1/internal/jobs/{id}/workers/{k}[/attach]`` — so a pod never
holds a credential that attaches to another job (and would get that job's
secret-store and tuple-service credentials with the attach).  Everything else is a 403
``out_of_scope``.

Tokens live in this process's memory only, as SHA-256 digests: a restart fails every
unfinished job anyway (:mod:`tally.execution.service`), and with it their tokens.
After its job ends a token still attaches, but an attach then carries no credentials
(they are revoked with the job); the table grows by one digest per job.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
from dataclasses import dataclass

from tally.common.audit import audit, current_identity
from tally.common.auth import Principal, unauthorized
from tally.common.errors import ApiError

PREFIX = "twrk_"


@dataclass(frozen=True)
class WorkerPrincipal(Principal):
    """A request made with a worker token: the pods of one job."""

    job_id: str = ""


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def is_worker_token(token: str) -> bool:
    """Whether a bearer token has the shape of a worker token."""
    return token.startswith(PREFIX)


class WorkerTokens:
    """The worker tokens this process issued, by digest (thread-safe)."""

    def __init__(self) -> None:
        self._jobs: dict[str, str] = {}
        """Digest of a token -> its job id."""
        self._lock = threading.Lock()

    def issue(self, job_id: str, issuer: Principal) -> str:
        """A new token for the pods of ``job_id`` (earlier ones stay valid)."""
        token = PREFIX + secrets.token_urlsafe(32)
        with self._lock:
            self._jobs[_digest(token)] = job_id
        audit("worker_token.issue", identity=issuer.identity, job=job_id)
        return token

    def authenticate(self, token: str, method: str, path: str) -> WorkerPrincipal:
        """The principal of a token on a route of its job's workers; else 401 or 403."""
        with self._lock:
            job_id = self._jobs.get(_digest(token))
        if job_id is None:
            raise unauthorized("invalid token")
        current_identity.set("worker")
        principal = WorkerPrincipal(
            identity="worker", service=False, roles=frozenset(), scopes=frozenset(), job_id=job_id
        )
        allowed = re.fullmatch(r"/v1/internal/jobs/([^/]+)/workers/[0-9]+(/attach)?", path)
        if method not in ("POST", "PUT") or allowed is None or allowed.group(1) != job_id:
            audit(
                "worker_token.refused",
                "refused",
                identity="worker",
                job=job_id,
                code="out_of_scope",
            )
            raise ApiError(
                403,
                "out_of_scope",
                f"the worker token of job {job_id} only attaches and reports that job's workers",
            )
        return principal
