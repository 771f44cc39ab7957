"""Adapter pages: the list and downloads."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from sqlalchemy.orm import Session

from app.models import Adapter, User
from app.services import adapters
from app.services.artifacts import LocalArtifactStore
from app.web.deps import current_user, get_db, owned_adapter, store_dep, verify_csrf
from app.web.responses import adapter_zip_response
from app.web.templating import render

router = APIRouter(dependencies=[Depends(verify_csrf)])


@router.get("/adapters")
def adapters_page(request: Request, user: User = Depends(current_user), db: Session = Depends(get_db)):
    return render(request, "adapters.html", {"adapters": adapters.adapters_for(db, user.workspace_id)})


@router.get("/adapters/{adapter_id}/download")
def download_adapter(adapter: Adapter = Depends(owned_adapter), store: LocalArtifactStore = Depends(store_dep)):
    return adapter_zip_response(adapter, store)
