"""The worker status board."""

from __future__ import annotations

from fastapi import APIRouter, Request

from app.http.deps import Csrf, CurrentUser, DbSession
from app.services.workers import worker_board
from app.web.templating import render

router = APIRouter(dependencies=[Csrf])


@router.get("/workers")
def workers_page(request: Request, user: CurrentUser, db: DbSession):
    return render(request, "workers.html", {"workers": worker_board(db, user.workspace_id)})
