"""Request body size limits, enforced before a handler reads the body.

``BodyLimitMiddleware`` answers 413 when ``Content-Length`` exceeds the limit for the
request's media type, and cuts off a body sent without a length (chunked) as soon as
it grows past the limit. ``application/octet-stream`` bodies (share uploads) get their
own, larger limit; everything else (JSON) the small one.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tally.common.errors import ApiError

OCTET_STREAM = "application/octet-stream"


class BodyTooLarge(ApiError):
    """Raised into the app when a chunked body passes its limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            413, "payload_too_large", f"request body exceeds the limit of {limit} bytes"
        )


class BodyLimitMiddleware:
    """413 for bodies above ``json_limit`` (``upload_limit`` for octet-stream)."""

    def __init__(self, app: ASGIApp, *, json_limit: int, upload_limit: int) -> None:
        self.app = app
        self.json_limit = json_limit
        self.upload_limit = upload_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        content_type = headers.get(b"content-type", b"").split(b";")[0].strip().decode("latin-1")
        limit = self.upload_limit if content_type == OCTET_STREAM else self.json_limit
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
                    f"for {content_type or 'this media type'}",
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
