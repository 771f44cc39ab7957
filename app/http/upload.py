"""The upload route class: refuses a body over the upload limit before reading it."""

from __future__ import annotations

import re

from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute

from app.config import get_settings
from app.http.nul_text import check_form
from app.services.dataset_ingest import upload_too_large_message

# Multipart framing and the small form fields around the file.
MULTIPART_SLACK = 1024 * 1024


class UploadRoute(APIRoute):
    """An upload route that refuses a body over the upload limit before reading it (by its
    Content-Length), or as soon as the stream passes the limit, with the plain upload-limit
    message. The limit is read at request time, so a changed setting applies at once. The early
    refusal is JSON; pages subclass it and override `too_large_response` to show the form.

    Every upload route's path pattern and methods are kept in `ROUTES`, so the body-limit middleware
    (app/http/body_limit.py), which runs before routing, lets uploads past the small body limit."""

    ROUTES: list[tuple[re.Pattern[str], frozenset[str]]] = []

    def __init__(self, path: str, endpoint, **kwargs) -> None:
        super().__init__(path, endpoint, **kwargs)
        UploadRoute.ROUTES.append((self.path_regex, frozenset(self.methods or ())))

    @classmethod
    def serves(cls, method: str, path: str) -> bool:
        return any(method in methods and pattern.match(path) for pattern, methods in cls.ROUTES)

    @classmethod
    def too_large_response(cls, request: Request, message: str, max_upload: int, headers: dict[str, str]) -> Response:
        return JSONResponse({"detail": message}, status_code=413, headers=headers)

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def refuse_oversized(request: Request):
            settings = get_settings()
            limit = settings.max_upload_bytes + MULTIPART_SLACK
            declared = request.headers.get("content-length", "")
            if declared.isascii() and declared.isdigit() and int(declared) > limit:
                # The client is still sending; do not keep this connection.
                return self.too_large_response(
                    request, upload_too_large_message(settings.max_upload_bytes), settings.max_upload_bytes, {"Connection": "close"}
                )
            receive = request._receive  # Starlette has no public hook to wrap a request's stream
            received = 0

            async def limited_receive():
                nonlocal received
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > limit:
                        raise HTTPException(413, upload_too_large_message(settings.max_upload_bytes))
                return message

            request._receive = limited_receive
            # The form's small text fields follow the app's rule on NUL characters (the middleware
            # leaves upload bodies alone); the parsed form is kept for the route.
            try:
                form = await request.form()
            except HTTPException:
                raise
            except Exception as exc:  # noqa: BLE001 - as FastAPI answers a body it cannot parse
                raise HTTPException(400, "There was an error parsing the body") from exc
            check_form(form.multi_items(), request.url.path)
            return await handler(request)

        return refuse_oversized
