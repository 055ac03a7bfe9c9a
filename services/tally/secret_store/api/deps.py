"""FastAPI dependencies as ``Annotated`` aliases: the store context and the caller.

They are ``async`` because they never block: FastAPI would otherwise run each one in
the thread pool, which costs more than the work itself on the metadata path.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from tally.common.auth import Principal, require_role
from tally.common.errors import ApiError
from tally.secret_store.context import StoreContext

_bearer = HTTPBearer(auto_error=False, description="a token bound to your identity")


async def get_store(request: Request) -> StoreContext:
    """The app's long-lived resources."""
    store: StoreContext = request.app.state.store
    return store


StoreDep = Annotated[StoreContext, Depends(get_store)]


async def current_principal(
    request: Request,
    store: StoreDep,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The identity behind the request's bearer token; 401 without a valid one."""
    return store.auth.authenticate(request.headers.get("authorization"))


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
