"""Blind review pages: two anonymous answers, one vote."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Form, HTTPException, Query, Request
from sqlalchemy.orm import Session

from app.models import User
from app.services import reviews
from app.services.artifacts import ArtifactStore
from app.web.compare import parse_ids
from app.web.deps import current_user, get_db, store_dep, verify_csrf
from app.web.responses import redirect
from app.web.templating import render

router = APIRouter(dependencies=[Depends(verify_csrf)])


@router.get("/review")
def review_page(request: Request, ids: list[str] = Query(default=[]), user: User = Depends(current_user),
                db: Session = Depends(get_db), store: ArtifactStore = Depends(store_dep)):
    adapter_ids = parse_ids(ids)
    try:
        item = reviews.next_item(db, store, workspace_id=user.workspace_id, reviewer_id=user.id, adapter_ids=adapter_ids)
    except reviews.ReviewError as exc:
        return render(request, "review.html", {"error": str(exc), "ids": ",".join(map(str, adapter_ids))}, status_code=409)
    db.commit()
    # Only the prompt, the two answers and an opaque token reach the page: never their sources.
    return render(request, "review.html", {"token": item.token, "prompt": item.prompt, "left": item.left_answer,
                                           "right": item.right_answer, "ids": ",".join(map(str, adapter_ids))})


@router.post("/review/{token}")
def vote(request: Request, token: str, choice: str = Form(""), ids: str = Form(""), user: User = Depends(current_user),
         db: Session = Depends(get_db)):
    item = reviews.item_for(db, token, user.workspace_id, user.id)
    if item is None:
        raise HTTPException(404, "This review pair is not yours or no longer exists.")
    try:
        reviews.record_vote(db, item, choice)
    except reviews.ReviewError as exc:
        raise HTTPException(409, str(exc)) from None
    db.commit()
    return redirect(request, f"/review?ids={ids}")
