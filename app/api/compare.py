"""The comparison as JSON (the page's twin), and evaluation requests."""

from __future__ import annotations

from fastapi import Query

from app.api.common import api_router
from app.http.deps import CurrentUser, DbSession, OwnedAdapter, Store
from app.http.lookups import comparison_or_404
from app.schemas import ComparisonPublic, EvaluationRequested
from app.services.adapters import request_evaluation

router = api_router()


@router.get("/compare")
def get_comparison(
    user: CurrentUser, db: DbSession, store: Store, ids: list[str] = Query(default=[], description="Adapter ids: ?ids=1&ids=2 or ?ids=1,2")
) -> ComparisonPublic:
    """Everything the comparison page shows: summary rows with intervals, best values, parameter
    diff, loss curves, side-by-side answers and the verdicts in words."""
    return ComparisonPublic(**comparison_or_404(db, store, user, ids))


@router.post("/adapters/{adapter_id}/evaluate", status_code=202)
def evaluate(adapter: OwnedAdapter, db: DbSession) -> EvaluationRequested:
    request_evaluation(db, adapter)
    return EvaluationRequested(adapter_id=adapter.id, evaluation_state=adapter.evaluation_state)
