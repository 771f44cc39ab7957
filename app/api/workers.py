"""Workers in the API: the status board as JSON."""

from __future__ import annotations

from dataclasses import asdict

from app.api.common import api_router
from app.http.deps import CurrentUser, DbSession
from app.schemas import WorkerPublic
from app.services.workers import worker_board

router = api_router()


@router.get("/workers", response_model=list[WorkerPublic])
def list_workers(user: CurrentUser, db: DbSession):
    return [WorkerPublic(**asdict(status)) for status in worker_board(db, user.workspace_id)]
