"""ASGI middleware in front of the routes: the request body size limit (413), and the count of requests being
answered that graceful shutdown waits on, with requests by route and status for /metrics."""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException

from tunestack.serve.errors import TooLarge, error_body

ROUTES = {"/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/metrics"}


class BodyLimit:
    """Refuses a body over `limit` bytes with 413: at once from its Content-Length, or as soon as a chunked body
    passes the limit (an HTTPException raised inside the app's body reading, which FastAPI passes on to the
    router's handler)."""

    def __init__(self, app, limit: int):
        self.app = app
        self.limit = limit

    def _message(self, size: str) -> str:
        return (f"body: the request body is {size} bytes, over the server's limit of {self.limit} "
                "(--max_request_bytes); send a shorter prompt")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length", b"0")
        if length.isdigit() and int(length) > self.limit:
            body = json.dumps(error_body(self._message(length.decode()), TooLarge.type, "body")).encode()
            await send({"type": "http.response.start", "status": TooLarge.status,
                        "headers": [(b"content-type", b"application/json"), (b"connection", b"close"),
                                    (b"content-length", str(len(body)).encode())]})
            return await send({"type": "http.response.body", "body": body})
        received = 0

        async def counting_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise HTTPException(TooLarge.status, self._message(f"more than {self.limit}"))
            return message

        await self.app(scope, counting_receive, send)


class TrackRequests:
    """Counts the requests being answered (a stream until its last byte) and, once answered, by route and status."""

    def __init__(self, app, serving):
        self.app = app
        self.serving = serving

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"] if scope["path"] in ROUTES else "other"

        async def counting_send(message):
            if message["type"] == "http.response.start":
                self.serving.metrics.requests.labels(path, str(message["status"])).inc()
            await send(message)

        tracked = path != "/health"  # probes during draining do not hold the shutdown up
        self.serving.in_flight += tracked
        try:
            await self.app(scope, receive, counting_send)
        finally:
            self.serving.in_flight -= tracked
