"""The comparison as JSON (the page's twin), and evaluation requests."""

from __future__ import annotations

from fastapi import Depends, Query
from sqlalchemy.orm import Session

from app.api.common import api_router
from app.models import Adapter, User
from app.services.adapters import request_evaluation
from app.services.artifacts import ArtifactStore
from app.web.compare import comparison_or_404
from app.web.deps import current_user, get_db, owned_adapter, store_dep

router = api_router()


@router.get("/compare")
def get_comparison(ids: list[str] = Query(default=[], description="Adapter ids: ?ids=1&ids=2 or ?ids=1,2"),
                   user: User = Depends(current_user), db: Session = Depends(get_db), store: ArtifactStore = Depends(store_dep)) -> dict:
    """Everything the comparison page shows: summary rows with intervals, best values, parameter
    diff, loss curves, side-by-side answers and the verdicts in words."""
    return comparison_or_404(db, store, user, ids)


@router.post("/adapters/{adapter_id}/evaluate", status_code=202)
def evaluate(adapter: Adapter = Depends(owned_adapter), db: Session = Depends(get_db)) -> dict:
    request_evaluation(db, adapter)
    return {"adapter_id": adapter.id, "evaluation_state": adapter.evaluation_state}
