"""The playground in the API: start a request, read what has been generated so far."""

from __future__ import annotations

from fastapi import Depends, HTTPException
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from app.api.common import api_router
from app.models import User
from app.services import playground
from app.web.deps import current_user, get_db

router = api_router()


class PlaygroundCreate(BaseModel):
    prompt: str
    adapter_ids: list[int]
    include_base: bool = True
    max_new_tokens: int = Field(128, ge=1, le=playground.MAX_NEW_TOKENS)
    temperature: float = Field(0.0, ge=0.0, le=2.0)


@router.post("/playground", status_code=202)
def start(body: PlaygroundCreate, user: User = Depends(current_user), db: Session = Depends(get_db)) -> dict:
    """Queue the prompt for the base model and each adapter; read the answers from GET /playground/{id}
    (or stream them from /playground/{id}/events as server-sent events)."""
    try:
        run = playground.create_request(db, user.workspace_id, prompt=body.prompt, adapter_ids=body.adapter_ids,
                                        include_base=body.include_base, max_new_tokens=body.max_new_tokens, temperature=body.temperature)
    except playground.PlaygroundError as exc:
        raise HTTPException(422, str(exc)) from None
    return {"id": run.id, "targets": run.targets}


@router.get("/playground/{request_id}")
def answers(request_id: str, user: User = Depends(current_user)) -> dict:
    if playground.load_request(request_id, user.workspace_id) is None:
        raise HTTPException(404, "This playground request is unknown or has expired.")
    return playground.collected_answers(request_id)
