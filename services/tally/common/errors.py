"""JSON errors for the services' REST APIs: ``{"error": code, "detail": text}``.

``ApiError`` is an ``HTTPException`` carrying a machine-readable ``code``;
``install_error_handlers(app)`` renders it, plain ``HTTPException``s (code derived from
the status) and request-validation failures (422, with every problem spelled out) in
that shape. Anything else becomes a logged 500 ``internal_error``: a 500 is a bug.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from tally.common.audit import audit

log = logging.getLogger(__name__)

STATUS_CODES: Mapping[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    410: "gone",
    411: "length_required",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "too_many_requests",
    503: "unavailable",
}


class ErrorBody(BaseModel):
    """The body of every error response."""

    error: str
    detail: str


class ApiError(HTTPException):
    """An HTTP error with a stable machine-readable ``code`` and a human ``detail``."""

    def __init__(
        self,
        status_code: int,
        code: str,
        detail: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(status_code=status_code, detail=detail, headers=dict(headers or {}))
        self.code = code


def error_response(
    status_code: int, code: str, detail: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """A ``JSONResponse`` in the shared error shape."""
    return JSONResponse({"error": code, "detail": detail}, status_code=status_code, headers=headers)


def error_responses(*status_codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries documenting the error body for ``status_codes``."""
    return {status: {"model": ErrorBody} for status in status_codes}


def _describe(errors: Sequence[Any]) -> str:
    parts = []
    for error in errors:
        location = ".".join(str(item) for item in error.get("loc", ()) if item != "body")
        message = error.get("msg", "invalid")
        parts.append(f"{location}: {message}" if location else message)
    return "; ".join(parts) or "invalid request"


async def _http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = getattr(exc, "code", None) or STATUS_CODES.get(exc.status_code, "error")
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if exc.status_code in (401, 403, 409, 413):  # decisions against the caller: audited
        audit(
            "refused",
            "refused",
            method=request.method,
            route=_route(request),
            status=exc.status_code,
            code=code,
        )
    return error_response(exc.status_code, code, detail, exc.headers)


def _route(request: Request) -> str:
    """The route template (``/v1/datasets/{dataset_id}``), not the path with its ids."""
    route = request.scope.get("route")
    return str(getattr(route, "path", request.url.path))


async def _validation_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error_response(422, "validation_error", _describe(exc.errors()))


async def _unhandled_exception(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error in %s %s", request.method, request.url.path)
    return error_response(500, "internal_error", "internal error; this is a bug, please report")


def install_error_handlers(app: FastAPI) -> None:
    """Render every error ``app`` raises as ``{"error": code, "detail": text}``."""
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    app.add_exception_handler(RequestValidationError, _validation_exception)
    app.add_exception_handler(Exception, _unhandled_exception)
