"""The worker status board."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from sqlalchemy.orm import Session

from app.models import User
from app.services.workers import worker_board
from app.web.deps import current_user, get_db, verify_csrf
from app.web.templating import render

router = APIRouter(dependencies=[Depends(verify_csrf)])


@router.get("/workers")
def workers_page(request: Request, user: User = Depends(current_user), db: Session = Depends(get_db)):
    return render(request, "workers.html", {"workers": worker_board(db, user.workspace_id)})
