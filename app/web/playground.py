"""The playground page: a prompt, several adapters, answers streamed side by side."""

from __future__ import annotations

import json

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import PlainTextResponse, StreamingResponse

from app.config import get_settings
from app.domain.numbers import finite_float, record_id, whole_number
from app.http.deps import Csrf, CurrentUser, DbSession
from app.services import adapters, playground, playground_streams, quotas
from app.web.templating import render

router = APIRouter(dependencies=[Csrf])
STREAM_SECONDS = 600


@router.get("/playground")
def playground_page(request: Request, user: CurrentUser, db: DbSession):
    chosen = {i for v in request.query_params.getlist("ids") if (i := record_id(v)) is not None}
    return render(
        request,
        "playground.html",
        {
            "adapters": adapters.adapters_for(db, user.workspace_id),
            "chosen": chosen,
            "form": {"max_new_tokens": 128, "temperature": 0.0, "prompt": ""},
        },
    )


@router.post("/playground")
async def start(request: Request, user: CurrentUser, db: DbSession):
    try:
        quotas.check_request_quota(db, user.workspace_id)
    except quotas.RateLimited as exc:
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
        return render(request, "_playground_answers.html", {"error": str(exc)}, status_code=429, headers=headers)
    form = await request.form()
    values = {
        "prompt": str(form.get("prompt") or ""),
        "max_new_tokens": str(form.get("max_new_tokens") or "128"),
        "temperature": str(form.get("temperature") or "0"),
    }
    try:
        run = playground.create_request(
            db,
            user.workspace_id,
            prompt=values["prompt"],
            adapter_ids=[i for v in form.getlist("ids") if (i := record_id(v)) is not None],
            include_base=form.get("include_base") is not None,
            max_new_tokens=_form_number(whole_number, values["max_new_tokens"], "Maximum new tokens must be a whole number"),
            temperature=_form_number(finite_float, values["temperature"], "Temperature must be a number"),
        )
    except playground.PlaygroundError as exc:
        return render(request, "_playground_answers.html", {"error": str(exc)}, status_code=422)
    names = {a.id: a.name for a in adapters.adapters_for(db, user.workspace_id)}
    panels = [{"target": t, "title": "Base model" if t == "base" else names.get(int(t.split(":")[1]), t)} for t in run.targets]
    return render(request, "_playground_answers.html", {"run": run, "panels": panels})


def _form_number(parse, raw: str, message: str):
    try:
        return parse(raw)
    except ValueError:
        raise playground.PlaygroundError(f"{message} (not {raw[:20]!r}).") from None


async def _sse(stream: playground_streams.EventStream):
    """Server-sent events: each generated piece as it arrives, a keep-alive comment while waiting."""
    async for event in stream.events(STREAM_SECONDS):
        yield ": keep-alive\n\n" if event is None else f"data: {json.dumps(event)}\n\n"


@router.get("/playground/{request_id}/events")
async def events(request_id: str, user: CurrentUser):
    """The answers as server-sent events. Async all the way (no thread per open stream); at most
    TAILOR_PLAYGROUND_MAX_STREAMS_PER_USER open at once per user (429 beyond)."""
    try:
        stream = await playground_streams.EventStream.open(
            request_id, user.workspace_id, user.id, get_settings().playground_max_streams_per_user
        )
    except playground_streams.TooManyStreams as exc:
        return PlainTextResponse(str(exc), status_code=429, headers={"Retry-After": "10"})
    if stream is None:
        raise HTTPException(404, "This playground request is unknown or has expired.")
    return StreamingResponse(_sse(stream), media_type="text/event-stream", headers={"Cache-Control": "no-store"})
