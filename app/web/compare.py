"""The comparison page, its CSV export, and asking for an evaluation."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from app.http.deps import Csrf, CurrentUser, DbSession, OwnedAdapter, Store
from app.http.lookups import comparison_or_404
from app.http.responses import redirect
from app.services import compare, preference_datasets
from app.services.adapters import request_evaluation
from app.web.templating import render

router = APIRouter(dependencies=[Csrf])


@router.get("/compare")
def compare_page(request: Request, user: CurrentUser, db: DbSession, store: Store, ids: list[str] = Query(default=[])):
    comparison = comparison_or_404(db, store, user, ids)
    adapter_ids = tuple(r["adapter_id"] for r in comparison["adapters"])
    votes = votes_context(db, user.workspace_id, adapter_ids, comparison=True)
    return render(request, "compare.html", {"c": comparison, "ids": ",".join(map(str, adapter_ids)), "votes": votes})


def votes_context(db, workspace_id: int, adapter_ids: tuple[int, ...], comparison: bool) -> dict:
    """How many preference pairs the votes here, and all of the workspace's, would yield (_votes_dataset.html)."""
    here = preference_datasets.vote_counts(db, workspace_id, preference_datasets.VoteScope(adapter_ids, comparison=comparison))
    return {
        "here": here,
        "here_label": "these votes" if comparison else "the votes on " + ("this adapter" if len(adapter_ids) == 1 else "these adapters"),
        "scope": "comparison" if comparison else "adapter",
        "workspace": preference_datasets.vote_counts(db, workspace_id, preference_datasets.VoteScope()),
    }


@router.get("/compare.csv")
def compare_csv(user: CurrentUser, db: DbSession, store: Store, ids: list[str] = Query(default=[])):
    comparison = comparison_or_404(db, store, user, ids)
    return Response(
        compare.comparison_csv(comparison),
        media_type="text/csv",
        headers={"Content-Disposition": 'attachment; filename="tailor-comparison.csv"'},
    )


@router.post("/adapters/{adapter_id}/evaluate")
def evaluate_adapter(request: Request, adapter: OwnedAdapter, db: DbSession):
    request_evaluation(db, adapter)
    return redirect(request, request.headers.get("referer") or "/adapters")
