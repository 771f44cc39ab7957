"""Workers in the API: the status board as JSON (counts for everyone, details for administrators)."""

from __future__ import annotations

from dataclasses import asdict

from app.api.common import api_router
from app.http.deps import CurrentUser, DbSession
from app.schemas import WorkerPublic, WorkersBoard
from app.services.workers import worker_board, worker_counts

router = api_router()


@router.get("/workers", response_model=WorkersBoard)
def list_workers(user: CurrentUser, db: DbSession):
    """How many workers are busy, idle, offline or stopped; machine names, devices and jobs only for administrators."""
    board = worker_board(db, user.workspace_id)
    shown = [WorkerPublic(**asdict(status)) for status in board] if user.is_admin else []
    return WorkersBoard(counts=worker_counts(board), workers=shown)
