"""The playground in the API: start a request, read what has been generated so far."""

from __future__ import annotations

from fastapi import HTTPException

from app.api.common import api_router
from app.http.deps import CurrentUser, DbSession
from app.schemas import PlaygroundAnswers, PlaygroundCreate, PlaygroundStarted
from app.services import playground, quotas

router = api_router()


@router.post("/playground", status_code=202, responses={429: {}})
def start(body: PlaygroundCreate, user: CurrentUser, db: DbSession) -> PlaygroundStarted:
    """Queue the prompt for the base model and each adapter; read the answers from GET /playground/{id}
    (or stream them from /playground/{id}/events as server-sent events). 429 with Retry-After over
    the workspace's requests per minute."""
    quotas.check_request_quota(db, user.workspace_id)  # RateLimited: answered 429 by app/main.py
    try:
        run = playground.create_request(
            db,
            user.workspace_id,
            prompt=body.prompt,
            adapter_ids=body.adapter_ids,
            include_base=body.include_base,
            max_new_tokens=body.max_new_tokens,
            temperature=body.temperature,
        )
    except playground.PlaygroundError as exc:
        raise HTTPException(422, str(exc)) from None
    return PlaygroundStarted(id=run.id, targets=run.targets)


@router.get("/playground/{request_id}")
def answers(request_id: str, user: CurrentUser) -> PlaygroundAnswers:
    if playground.load_request(request_id, user.workspace_id) is None:
        raise HTTPException(404, "This playground request is unknown or has expired.")
    return PlaygroundAnswers(**playground.collected_answers(request_id))
