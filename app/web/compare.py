"""The comparison page, its CSV export, and asking for an evaluation."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from app.models import Adapter, User
from app.services import compare
from app.services.adapters import request_evaluation
from app.services.artifacts import ArtifactStore
from app.web.deps import current_user, get_db, owned_adapter, store_dep, verify_csrf
from app.web.responses import redirect
from app.web.templating import render

router = APIRouter(dependencies=[Depends(verify_csrf)])


def parse_ids(ids: list[str]) -> list[int]:
    """?ids=1&ids=2 or ?ids=1,2 — both work (checkbox forms send the first, people type the second)."""
    try:
        return [int(part) for value in ids for part in value.split(",") if part.strip()]
    except ValueError:
        raise HTTPException(422, "Adapter ids must be whole numbers, e.g. /compare?ids=1,2.") from None


def comparison_or_404(db: Session, store: ArtifactStore, user: User, ids: list[str]) -> dict:
    try:
        return compare.build_comparison(db, store, user.workspace_id, parse_ids(ids))
    except compare.CompareError as exc:
        raise HTTPException(404 if "no adapter" in str(exc) else 422, str(exc)) from None


@router.get("/compare")
def compare_page(request: Request, ids: list[str] = Query(default=[]), user: User = Depends(current_user),
                 db: Session = Depends(get_db), store: ArtifactStore = Depends(store_dep)):
    comparison = comparison_or_404(db, store, user, ids)
    return render(request, "compare.html", {"c": comparison, "ids": ",".join(str(r["adapter_id"]) for r in comparison["adapters"])})


@router.get("/compare.csv")
def compare_csv(ids: list[str] = Query(default=[]), user: User = Depends(current_user), db: Session = Depends(get_db),
                store: ArtifactStore = Depends(store_dep)):
    comparison = comparison_or_404(db, store, user, ids)
    return Response(compare.comparison_csv(comparison), media_type="text/csv",
                    headers={"Content-Disposition": 'attachment; filename="tailor-comparison.csv"'})


@router.post("/adapters/{adapter_id}/evaluate")
def evaluate_adapter(request: Request, adapter: Adapter = Depends(owned_adapter), db: Session = Depends(get_db)):
    request_evaluation(db, adapter)
    return redirect(request, request.headers.get("referer") or "/adapters")
