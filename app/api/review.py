"""Blind review in the API: fetch an anonymous pair, vote on it."""

from __future__ import annotations

from fastapi import HTTPException, Query

from app.api.common import api_router
from app.http.deps import CurrentUser, DbSession, Store
from app.http.lookups import parse_ids
from app.schemas import ReviewPair, Vote, VoteRecorded
from app.services import reviews

router = api_router()


@router.get("/review/next")
def next_pair(user: CurrentUser, db: DbSession, store: Store, ids: list[str] = Query(default=[])) -> ReviewPair:
    """A prompt and two anonymous answers (left, right); which adapter wrote which is not revealed."""
    try:
        item = reviews.next_item(db, store, workspace_id=user.workspace_id, reviewer_id=user.id, adapter_ids=parse_ids(ids))
    except reviews.ReviewError as exc:
        raise HTTPException(409, str(exc)) from None
    return ReviewPair(token=item.token, prompt=item.prompt, left=item.left_answer, right=item.right_answer)


@router.post("/review/{token}")
def vote(token: str, body: Vote, user: CurrentUser, db: DbSession) -> VoteRecorded:
    item = reviews.item_for(db, token, user.workspace_id, user.id)
    if item is None:
        raise HTTPException(404, "This review pair is not yours or no longer exists.")
    try:
        reviews.record_vote(db, item, body.choice)
    except reviews.ReviewError as exc:
        raise HTTPException(409, str(exc)) from None
    return VoteRecorded(recorded=body.choice)
