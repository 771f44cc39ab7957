"""An answer given by a middleware before routing (a body too large, a NUL in the address), in the
shape each part of the app answers: OpenAI's error body under /v1, FastAPI's {"detail"} for the API,
plain text for pages."""

from __future__ import annotations

import json

from starlette.types import Scope, Send


async def answer_early(
    scope: Scope, send: Send, status: int, message: str, *, code: str, param: str | None = None, close: bool = False
) -> None:
    path = scope["path"]
    if path.startswith("/v1/"):  # OpenAI clients read OpenAI's error body (app/openai_api/errors.py)
        error = {"message": message, "type": "invalid_request_error", "param": param, "code": code}
        body, content_type = json.dumps({"error": error}).encode(), b"application/json"
    elif path.startswith("/api/") or path == "/openapi.json":
        body, content_type = json.dumps({"detail": message}).encode(), b"application/json"
    else:
        body, content_type = message.encode(), b"text/plain; charset=utf-8"
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
