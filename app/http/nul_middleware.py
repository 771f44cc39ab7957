"""The middleware that applies the rule of app/http/nul_text.py (no NUL characters in text) to every
request: the path and query string before routing, a body as the app reads it."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.http.early_answer import answer_early
from app.http.nul_text import ADDRESS, NUL, NulInText, is_openai, nul_in_body, nul_in_pairs, nul_message, query_pairs
from app.http.upload import UploadRoute


class NulTextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        query: bytes = scope["query_string"]
        field = ADDRESS if NUL in path else nul_in_pairs(query_pairs(query.decode("latin-1"))) if b"%00" in query else None
        if field is not None:
            await answer_early(scope, send, 400 if is_openai(path) else 422, nul_message(field), code="invalid_value", param=field)
            return
        if UploadRoute.serves(scope["method"], path):
            await self.app(scope, receive, send)  # large bodies: the upload route checks its form fields
            return
        chunks: list[bytes] = []

        async def checked_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    body = b"".join(chunks)
                    chunks.clear()
                    where = await nul_in_body(scope, body)
                    if where is not None:
                        raise NulInText(where, path)
            return message

        await self.app(scope, checked_receive, send)
