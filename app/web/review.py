"""Blind review pages: two anonymous answers, one vote."""

from __future__ import annotations

from fastapi import APIRouter, Form, HTTPException, Query, Request

from app.http.deps import Csrf, CurrentUser, DbSession, Store
from app.http.lookups import parse_ids
from app.http.responses import redirect
from app.services import reviews
from app.web.compare import votes_context
from app.web.templating import render

router = APIRouter(dependencies=[Csrf])


@router.get("/review")
def review_page(request: Request, user: CurrentUser, db: DbSession, store: Store, ids: list[str] = Query(default=[])):
    adapter_ids = parse_ids(ids)
    try:
        item = reviews.next_item(db, store, workspace_id=user.workspace_id, reviewer_id=user.id, adapter_ids=adapter_ids)
    except reviews.ReviewError as exc:
        votes = votes_context(db, user.workspace_id, tuple(adapter_ids), comparison=False)
        return render(request, "review.html", {"error": str(exc), "ids": ",".join(map(str, adapter_ids)), "votes": votes}, status_code=409)
    # Only the prompt, the two answers and an opaque token reach the page: never their sources.
    return render(
        request,
        "review.html",
        {
            "token": item.token,
            "prompt": item.prompt,
            "left": item.left_answer,
            "right": item.right_answer,
            "ids": ",".join(map(str, adapter_ids)),
            "votes": votes_context(db, user.workspace_id, tuple(adapter_ids), comparison=False),
        },
    )


@router.post("/review/{token}")
def vote(request: Request, token: str, user: CurrentUser, db: DbSession, choice: str = Form(""), ids: str = Form("")):
    item = reviews.item_for(db, token, user.workspace_id, user.id)
    if item is None:
        raise HTTPException(404, "This review pair is not yours or no longer exists.")
    try:
        reviews.record_vote(db, item, choice)
    except reviews.ReviewError as exc:
        raise HTTPException(409, str(exc)) from None
    return redirect(request, f"/review?ids={ids}")
