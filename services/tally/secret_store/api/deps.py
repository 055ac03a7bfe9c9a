"""FastAPI dependencies as ``Annotated`` aliases: the store context and the caller.

They are ``async`` because they never block: FastAPI would otherwise run each one in
the thread pool, which costs more than the work itself on the metadata path.
"""

from __future__ import annotations

import re
import uuid
from typing import Annotated, Any

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from tally.common.auth import Principal, require_role
from tally.common.errors import ApiError
from tally.secret_store import job_tokens
from tally.secret_store.context import StoreContext

_bearer = HTTPBearer(auto_error=False, description="a token bound to your identity")


async def get_store(request: Request) -> StoreContext:
    """The app's long-lived resources."""
    store: StoreContext = request.app.state.store
    return store


StoreDep = Annotated[StoreContext, Depends(get_store)]


_JOB_TOKEN_ROUTES = (
    ("GET", re.compile(r"^/v1/internal/datasets/[^/]+(/columns/[^/]+)?$")),
    ("POST", re.compile(r"^/v1/internal/datasets$")),
    ("PUT", re.compile(r"^/v1/datasets/[^/]+/columns/[^/]+$")),
    ("POST", re.compile(r"^/v1/datasets/[^/]+/commit$")),
)
"""The only routes a job token reaches: read the job's inputs, write its results.  Privacy
budgets are charged by the execution service itself, before the workers start, so a
worker's credential cannot spend an input's budget."""


async def current_principal(
    request: Request,
    store: StoreDep,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The identity behind the request's bearer token; 401 without a valid one.

    A job token (:mod:`tally.secret_store.job_tokens`) is looked up in the database and
    reaches only the routes that read its job's inputs and write its results (each of
    them checks the dataset against the token's scope); any other route is a 403.
    """
    header = request.headers.get("authorization") or ""
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and job_tokens.is_job_token(token.strip()):
        principal = await run_in_threadpool(job_tokens.authenticate, store, token.strip())
        path = request.url.path
        if not any(request.method == m and pattern.match(path) for m, pattern in _JOB_TOKEN_ROUTES):
            raise ApiError(
                403,
                "out_of_scope",
                f"the token of job {principal.job_id} only reads the job's inputs and writes "
                "its results",
            )
        return principal
    return store.auth.authenticate(header or None)


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


async def service_principal(principal: CurrentPrincipal) -> Principal:
    """The caller, who must hold this party's service credential."""
    if not principal.service:
        raise ApiError(403, "forbidden", "this route is for the party's own services only")
    return principal


ServicePrincipal = Annotated[Principal, Depends(service_principal)]


async def provider_principal(principal: CurrentPrincipal) -> Principal:
    """The caller, who must hold the ``provider`` role (it brings data in)."""
    require_role(principal, "provider", "bringing data in (datasets, input masks)")
    return principal


ProviderPrincipal = Annotated[Principal, Depends(provider_principal)]

DatasetId = Annotated[uuid.UUID, Path(description="dataset id")]
ColumnName = Annotated[str, Path(max_length=64, description="column name")]

OCTET_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}
"""OpenAPI text of a share upload body (read as a stream, not parsed by FastAPI)."""

OCTET_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        "description": "little-endian uint64 shares",
    }
}
