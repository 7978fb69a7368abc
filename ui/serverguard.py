"""The guard in front of ``viewfinder serve``'s app (pure ASGI middleware): the bearer token, the body
cap, and the library header on every answer."""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable
from typing import Any

from ui.client import HOME_HEADER
from ui.launch import MAX_UPLOAD_MB

ASGIApp = Callable[[dict[str, Any], Callable[[], Awaitable[dict[str, Any]]], Callable[[dict[str, Any]], Awaitable[None]]], Awaitable[None]]


class Guard:
    """Pure ASGI middleware: the bearer token, the body cap (413 before the body is read, and while it
    streams when no length was sent), and the library header on every answer."""

    def __init__(self, app: ASGIApp, *, home: str, token: str | None, max_body: int) -> None:
        self.app, self.token, self.max_body = app, token, max_body
        self.home_header = (HOME_HEADER.lower().encode(), home.encode("utf-8", "surrogateescape"))

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        if self.token is not None and not self._authorised(headers.get(b"authorization", b"")):
            await self._reply(send, 401, {"error": "A bearer token is required.", "type": "ViewfinderError"},
                              extra=[(b"www-authenticate", b"Bearer")], home=False)  # fmt: skip
            return
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            await self._reply(send, 413, self._too_large())
            return
        received = 0
        started = refused = False

        async def counted_receive() -> dict[str, Any]:
            # A body with no length (chunked) that grows past the cap: answer 413 now and tell the app
            # the client has gone, so it stops reading; whatever it then tries to send is dropped.
            nonlocal received, started, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body and not started:
                    refused = started = True
                    await self._reply(send, 413, self._too_large())
                    return {"type": "http.disconnect"}
            return message

        async def tagged_send(message: dict[str, Any]) -> None:
            nonlocal started
            if refused:
                return
            if message["type"] == "http.response.start":
                started = True
                message = {**message, "headers": [*message.get("headers", []), self.home_header]}
            await send(message)

        try:
            await self.app(scope, counted_receive, tagged_send)
        except Exception:
            if not refused:
                raise  # the app's own error (its 500 has been sent)

    def _authorised(self, header: bytes) -> bool:
        scheme, _, value = header.decode("latin-1").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), str(self.token).encode())

    def _too_large(self) -> dict[str, str]:
        return {"error": f"The request is larger than the upload cap of {MAX_UPLOAD_MB} MB.", "type": "QueryError"}

    async def _reply(self, send: Any, status: int, body: dict[str, str], *, extra: list[tuple[bytes, bytes]] | None = None, home: bool = True) -> None:
        data = json.dumps(body).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()), *(extra or [])]
        if home:
            headers.append(self.home_header)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": data})
