"""Request limits of the prediction service: a bound on the size of request bodies.

`BodySizeLimit` is a pure ASGI middleware: a request whose `Content-Length` exceeds the limit
is answered 413 before the app runs; a body without a length (chunked) is counted as it
streams, and the chunk that crosses the limit is never handed to the app, which therefore
never holds more than the limit. Either way the answer is 413 with a JSON `detail` naming the
limit. Header sizes are the server's to bound (uvicorn: `http="h11"` with
`h11_max_incomplete_event_size`).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodyTooLarge(Exception):
    """Raised to the app from `receive` when the streamed body crosses the limit."""


class BodySizeLimit:
    """ASGI middleware answering 413 to request bodies over `max_bytes`.

    Use as `app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)`.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        """Wrap an ASGI app.

        Args:
            app: The app to protect.
            max_bytes: The largest body passed on, in bytes (> 0).

        Raises:
            ValueError: `max_bytes` not positive.
        """
        if max_bytes <= 0:
            raise ValueError(f"max_bytes: must be > 0, got {max_bytes}")
        self.app = app
        self.max_bytes = max_bytes

    def _message(self) -> str:
        return f"request body exceeds the limit of {self.max_bytes} bytes (max_body_bytes)"

    async def _reject(self, send: Send, status: int, message: str) -> None:
        body = json.dumps({"detail": message}).encode()
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

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        lengths = [v for k, v in scope.get("headers", ()) if k.lower() == b"content-length"]
        if lengths:
            try:
                declared = int(lengths[0])
            except ValueError:
                declared = -1
            if declared < 0 or len(set(lengths)) > 1:
                await self._reject(send, 400, "Content-Length: not one non-negative integer")
                return
            if declared > self.max_bytes:
                await self._reject(send, 413, self._message())
                return

        received = 0
        exceeded = False
        started = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            if exceeded:
                raise BodyTooLarge(self._message())
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    exceeded = True
                    raise BodyTooLarge(self._message())
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded:  # whatever the app answers to the exception, the client gets 413
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await self._reject(send, 413, self._message())
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not exceeded:
                raise
            if not started:  # the app let the limit's exception (or its own) escape
                started = True
                await self._reject(send, 413, self._message())
