"""The bake-off page: every technique's job, then the recommendation and the comparison."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request
from sqlalchemy.orm import Session

from app.models import User
from app.services import bakeoff
from app.services.artifacts import ArtifactStore
from app.web.deps import current_user, get_db, store_dep, verify_csrf
from app.web.responses import is_htmx
from app.web.templating import render

router = APIRouter(dependencies=[Depends(verify_csrf)])


def group_context(db: Session, store: ArtifactStore, user: User, group_id: str) -> dict:
    state = bakeoff.group_state(db, user.workspace_id, group_id)
    if state is None:
        raise HTTPException(404, "There is no such bake-off in your workspace.")
    return {"state": state, "recommendation": bakeoff.recommend(store, state) if state.finished else None}


@router.get("/groups/{group_id}")
def group_page(request: Request, group_id: str, user: User = Depends(current_user), db: Session = Depends(get_db),
               store: ArtifactStore = Depends(store_dep)):
    template = "_group_status.html" if is_htmx(request) else "group.html"
    return render(request, template, group_context(db, store, user, group_id), headers={"Vary": "HX-Request", "Cache-Control": "no-store"})
