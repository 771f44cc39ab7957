"""No NUL characters (\\x00) in text a request carries: PostgreSQL cannot store one in a text
column, so one that reached the database would be a server error. One rule, checked in one place
before any route sees the text: a NUL in the path, a query parameter, a form field (urlencoded or
multipart) or any string (or key) of a JSON body is refused with a plain message naming the field —
422 on pages and the API, 400 in OpenAI's error body on /v1.

A pure ASGI middleware (app/http/nul_middleware.py) applies it to every request: the path and query
before routing (an early answer), a body as the app reads it, when its last chunk arrives (bodies
other than uploads are small, TAILOR_MAX_BODY_BYTES), by raising `NulInText` from the read, so each
part of the app answers it the way it answers any HTTPException. Upload routes (large multipart
bodies) check their small form fields once parsed (`check_form`, called by UploadRoute); the
uploaded file's own name is not
refused but cleaned (control characters dropped, app/services/dataset_ingest.clean_filename), and
the file's bytes are data, not text, and may hold anything."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Iterable
from typing import Any
from urllib.parse import parse_qsl

from fastapi import HTTPException
from starlette.datastructures import Headers
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.types import Scope

NUL = "\x00"
ADDRESS = "the address"


def nul_message(field: str) -> str:
    where = field if field == ADDRESS else f"field {field}"
    return f"Text may not contain NUL characters ({where})."


def is_openai(path: str) -> bool:
    return path.startswith("/v1/")


class NulInText(HTTPException):
    """A NUL in the text of a request; `field` names where (a dotted path in a JSON body)."""

    def __init__(self, field: str, path: str = ""):
        super().__init__(400 if is_openai(path) else 422, nul_message(field))
        self.field = field


def _named(name: str) -> str:
    return name.replace(NUL, "\\0")


def nul_in_pairs(pairs: Iterable[tuple[str, Any]]) -> str | None:
    """The first field whose name or text value holds a NUL (files and other values are skipped)."""
    for name, value in pairs:
        if NUL in name or (isinstance(value, str) and NUL in value):
            return _named(name)
    return None


def nul_in_json(value: Any) -> str | None:
    """The dotted path of the first string or key holding a NUL in a parsed JSON value (iterative,
    so a deeply nested body cannot exhaust the stack)."""
    pending: list[tuple[str, Any]] = [("", value)]
    while pending:
        where, item = pending.pop()
        if isinstance(item, str):
            if NUL in item:
                return where or "body"
        elif isinstance(item, dict):
            for key, child in reversed(list(item.items())):
                path = f"{where}.{_named(key)}" if where else _named(key)
                if NUL in key:
                    return path
                pending.append((path, child))
        elif isinstance(item, list):
            pending.extend((f"{where}.{i}" if where else str(i), child) for i, child in reversed(list(enumerate(item))))
    return None


def query_pairs(raw: str) -> list[tuple[str, str]]:
    return parse_qsl(raw, keep_blank_values=True, encoding="utf-8", errors="replace")


def check_form(pairs: Iterable[tuple[str, Any]], path: str = "") -> None:
    """Raise NulInText when a form field's name or text holds a NUL."""
    field = nul_in_pairs(pairs)
    if field is not None:
        raise NulInText(field, path)


async def _nul_in_multipart(scope: Scope, body: bytes) -> str | None:
    async def stream() -> AsyncGenerator[bytes, None]:
        yield body

    try:
        form = await MultiPartParser(Headers(scope=scope), stream()).parse()
    except MultiPartException:
        return None  # the route's own parse answers a malformed body
    try:
        return nul_in_pairs(form.multi_items())
    finally:
        await form.close()


async def nul_in_body(scope: Scope, body: bytes) -> str | None:
    """Where a NUL is in a (small) request body, by its content type; None when nowhere."""
    content_type = Headers(scope=scope).get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/x-www-form-urlencoded":
        if b"%00" not in body and b"\x00" not in body:
            return None
        return nul_in_pairs(query_pairs(body.decode("utf-8", "replace")))
    if content_type == "multipart/form-data":
        return await _nul_in_multipart(scope, body) if b"\x00" in body else None
    if b"\\u0000" not in body:  # JSON writes a NUL only as this escape; anything else is no JSON text
        return None
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):
        return None  # not JSON: the route answers that
    return nul_in_json(parsed)
