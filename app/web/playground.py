"""The playground page: a prompt, several adapters, answers streamed side by side."""

from __future__ import annotations

import json
import time

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import StreamingResponse

from app.http.deps import Csrf, CurrentUser, DbSession
from app.services import adapters, playground, quotas
from app.web.templating import render

router = APIRouter(dependencies=[Csrf])
STREAM_SECONDS = 600


@router.get("/playground")
def playground_page(request: Request, user: CurrentUser, db: DbSession):
    chosen = {int(v) for v in request.query_params.getlist("ids") if v.isdigit()}
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
            adapter_ids=[int(v) for v in form.getlist("ids") if isinstance(v, str) and v.isdigit()],
            include_base=form.get("include_base") is not None,
            max_new_tokens=int(float(values["max_new_tokens"])),
            temperature=float(values["temperature"]),
        )
    except (playground.PlaygroundError, ValueError) as exc:
        message = str(exc) if isinstance(exc, playground.PlaygroundError) else "Maximum new tokens and temperature must be numbers."
        return render(request, "_playground_answers.html", {"error": message}, status_code=422)
    names = {a.id: a.name for a in adapters.adapters_for(db, user.workspace_id)}
    panels = [{"target": t, "title": "Base model" if t == "base" else names.get(int(t.split(":")[1]), t)} for t in run.targets]
    return render(request, "_playground_answers.html", {"run": run, "panels": panels})


def event_stream(request_id: str):
    """Server-sent events: each generated piece as it arrives, then 'finished'."""
    last, deadline = "0", time.monotonic() + STREAM_SECONDS
    while time.monotonic() < deadline:
        for event_id, event in playground.read_events(request_id, after=last, block_ms=1000):
            last = event_id
            yield f"data: {json.dumps(event)}\n\n"
            if event.get("finished") or event.get("error"):
                return
        yield ": keep-alive\n\n"
    yield f"data: {json.dumps({'error': 'No answer within 10 minutes; is an inference worker running?'})}\n\n"


@router.get("/playground/{request_id}/events")
def events(request_id: str, user: CurrentUser):
    if playground.load_request(request_id, user.workspace_id) is None:
        raise HTTPException(404, "This playground request is unknown or has expired.")
    return StreamingResponse(event_stream(request_id), media_type="text/event-stream", headers={"Cache-Control": "no-store"})
