"""Workers in the API: the status board as JSON."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import Depends
from sqlalchemy.orm import Session

from app.api.common import api_router
from app.models import User
from app.schemas import WorkerPublic
from app.services.workers import worker_board
from app.web.deps import current_user, get_db

router = api_router()


@router.get("/workers", response_model=list[WorkerPublic])
def list_workers(user: User = Depends(current_user), db: Session = Depends(get_db)):
    return [WorkerPublic(**asdict(status)) for status in worker_board(db, user.workspace_id)]
