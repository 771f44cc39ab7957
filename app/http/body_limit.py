"""Request bodies are limited on every route that is not an upload (TAILOR_MAX_BODY_BYTES, 1 MiB by
default): a pure ASGI middleware, outside sign-in and routing, refuses a declared Content-Length
over the limit with 413 before anything reads the body, and counts the chunks of a streamed
(chunked) body as the app reads them, stopping at the limit. Upload routes (`UploadRoute`) keep
their own, larger limit (TAILOR_MAX_UPLOAD_BYTES), enforced the same way by the route."""

from __future__ import annotations

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.config import get_settings
from app.http.early_answer import answer_early
from app.http.upload import UploadRoute
from app.services.dataset_ingest import format_bytes


def body_too_large_message(limit: int) -> str:
    return f"The request body is larger than the limit of {format_bytes(limit)} for this address (files go through the upload form)."


class BodyTooLarge(HTTPException):
    """Raised while a streamed body is read, when it passes the limit; answered as a plain 413."""

    def __init__(self, limit: int):
        super().__init__(413, body_too_large_message(limit), headers={"Connection": "close"})


def _is_upload(scope: Scope) -> bool:
    """Whether the request goes to an upload route (looked up only for bodies over the small limit)."""
    return UploadRoute.serves(scope["method"], scope["path"])


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = get_settings().max_body_bytes
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), b"")
        if declared.isdigit() and int(declared) > limit and not _is_upload(scope):
            await self._refuse(scope, send, limit)
            return
        received = 0
        upload: bool | None = None

        async def limited_receive() -> Message:
            nonlocal received, upload
            message = await receive()
            if message["type"] == "http.request" and upload is not True:
                received += len(message.get("body", b""))
                if received > limit:
                    if upload is None:
                        upload = _is_upload(scope)
                    if not upload:
                        raise BodyTooLarge(limit)
            return message

        await self.app(scope, limited_receive, send)

    @staticmethod
    async def _refuse(scope: Scope, send: Send, limit: int) -> None:
        await answer_early(scope, send, 413, body_too_large_message(limit), code="request_too_large", close=True)
