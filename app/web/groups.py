"""The bake-off page: every technique's job, then the recommendation and the comparison."""

from __future__ import annotations

from fastapi import APIRouter, Request

from app.http.deps import Csrf, CurrentUser, DbSession, Store
from app.http.lookups import group_or_404
from app.http.responses import is_htmx
from app.web.templating import render

router = APIRouter(dependencies=[Csrf])


@router.get("/groups/{group_id}")
def group_page(request: Request, group_id: str, user: CurrentUser, db: DbSession, store: Store):
    template = "_group_status.html" if is_htmx(request) else "group.html"
    return render(request, template, group_or_404(db, store, user, group_id), headers={"Vary": "HX-Request", "Cache-Control": "no-store"})
