"""Request body size limits, enforced before a handler reads the body.

``BodyLimitMiddleware`` answers 413 when ``Content-Length`` exceeds the limit of the
request's *route*, and cuts off a body sent without a length (chunked) as soon as it
grows past that limit — before authentication, before anything is buffered.  The
routes that take share uploads (``upload_routes``: method and path pattern) get the
large limit; every other route the small one, whatever ``Content-Type`` the caller
claims (an octet-stream body to a JSON route is held to the JSON limit).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tally.common.errors import ApiError

OCTET_STREAM = "application/octet-stream"

UploadRoute = tuple[str, str]
"""(HTTP method, regular expression the whole path must match)."""


class BodyTooLarge(ApiError):
    """Raised into the app when a chunked body passes its limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            413, "payload_too_large", f"request body exceeds the limit of {limit} bytes"
        )


class BodyLimitMiddleware:
    """413 for bodies above ``json_limit`` (``upload_limit`` on the ``upload_routes``)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        json_limit: int,
        upload_limit: int = 0,
        upload_routes: Sequence[UploadRoute] = (),
    ) -> None:
        self.app = app
        self.json_limit = json_limit
        self.upload_limit = upload_limit
        self.upload_routes = [(method, re.compile(path)) for method, path in upload_routes]

    def limit_for(self, method: str, path: str) -> int:
        """The body limit of one request."""
        for route_method, pattern in self.upload_routes:
            if method == route_method and pattern.fullmatch(path):
                return self.upload_limit
        return self.json_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        limit = self.limit_for(str(scope.get("method", "")), str(scope.get("path", "")))
        length = headers.get(b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                await _reject(send, 400, "bad_request", "Content-Length is not a number")
                return
            if declared > limit:
                await _reject(
                    send,
                    413,
                    "payload_too_large",
                    f"request body of {declared} bytes exceeds the limit of {limit} bytes "
                    "for this route",
                )
                return
            await self.app(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        try:
            await self.app(scope, limited_receive, send)
        except BodyTooLarge as error:
            await _reject(send, 413, error.code, str(error.detail))


async def _reject(send: Send, status: int, code: str, detail: str) -> None:
    body = json.dumps({"error": code, "detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
