"""The worker status board: counts for everyone, machine names and busy state for administrators."""

from __future__ import annotations

from fastapi import APIRouter, Request

from app.http.deps import Csrf, CurrentUser, DbSession
from app.services.workers import worker_board, worker_counts
from app.web.templating import render

router = APIRouter(dependencies=[Csrf])


@router.get("/workers")
def workers_page(request: Request, user: CurrentUser, db: DbSession):
    board = worker_board(db, user.workspace_id)
    return render(request, "workers.html", {"workers": board if user.is_admin else [], "counts": worker_counts(board), "total": len(board)})
