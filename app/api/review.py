"""Blind review in the API: fetch an anonymous pair, vote on it."""

from __future__ import annotations

from fastapi import Depends, HTTPException, Query
from pydantic import BaseModel
from sqlalchemy.orm import Session

from app.api.common import api_router
from app.models import User
from app.services import reviews
from app.services.artifacts import ArtifactStore
from app.web.compare import parse_ids
from app.web.deps import current_user, get_db, store_dep

router = api_router()


class Vote(BaseModel):
    choice: str


@router.get("/review/next")
def next_pair(ids: list[str] = Query(default=[]), user: User = Depends(current_user), db: Session = Depends(get_db),
              store: ArtifactStore = Depends(store_dep)) -> dict:
    """A prompt and two anonymous answers (left, right); which adapter wrote which is not revealed."""
    try:
        item = reviews.next_item(db, store, workspace_id=user.workspace_id, reviewer_id=user.id, adapter_ids=parse_ids(ids))
    except reviews.ReviewError as exc:
        raise HTTPException(409, str(exc)) from None
    db.commit()
    return {"token": item.token, "prompt": item.prompt, "left": item.left_answer, "right": item.right_answer}


@router.post("/review/{token}")
def vote(token: str, body: Vote, user: User = Depends(current_user), db: Session = Depends(get_db)) -> dict:
    item = reviews.item_for(db, token, user.workspace_id, user.id)
    if item is None:
        raise HTTPException(404, "This review pair is not yours or no longer exists.")
    try:
        reviews.record_vote(db, item, body.choice)
    except reviews.ReviewError as exc:
        raise HTTPException(409, str(exc)) from None
    db.commit()
    return {"recorded": body.choice}
