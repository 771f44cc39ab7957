"""Pages that turn what happened in Tailor into preference datasets: from blind review votes, and
from corrections written in the playground (and the corrections table)."""

from __future__ import annotations

from fastapi import APIRouter, Form, HTTPException, Request

from app.http.deps import Csrf, CurrentUser, DbSession, Store
from app.http.lookups import adapter_in_workspace, parse_ids
from app.http.made_datasets import made_dataset
from app.http.responses import is_htmx, redirect
from app.services import preference_datasets
from app.web.templating import render

router = APIRouter(dependencies=[Csrf])


def vote_scope(db, user, ids: str, scope: str) -> preference_datasets.VoteScope:
    """The votes a form names: 'workspace', 'adapter' (votes involving these adapters) or
    'comparison' (pairs among these adapters and the base model); unknown adapters are 404."""
    if scope == "workspace":
        return preference_datasets.VoteScope()
    try:
        adapter_ids = tuple(adapter_in_workspace(db, i, user).id for i in parse_ids([ids]))
    except HTTPException as exc:
        if exc.status_code == 404:
            raise
        raise HTTPException(422, "Name the adapters by their numbers, e.g. 3,5.") from None
    if not adapter_ids:
        raise HTTPException(422, "Choose at least one adapter, or the whole workspace.")
    return preference_datasets.VoteScope(adapter_ids, comparison=scope == "comparison")


@router.post("/preference-datasets/votes")
def dataset_from_votes(request: Request, user: CurrentUser, db: DbSession, store: Store, ids: str = Form(""), scope: str = Form("adapter")):
    chosen = vote_scope(db, user, ids, scope)
    build = lambda: preference_datasets.votes_dataset(db, store, workspace_id=user.workspace_id, user_id=user.id, scope=chosen)  # noqa: E731
    dataset = made_dataset(request, db, user, build, "review_votes")
    return redirect(request, f"/datasets/{dataset.id}?task=preference")


@router.get("/corrections")
def corrections_page(request: Request, user: CurrentUser, db: DbSession):
    rows = preference_datasets.corrections_for(db, user.workspace_id)
    return render(request, "corrections.html", {"corrections": rows})


@router.post("/corrections")
def save_correction(
    request: Request,
    user: CurrentUser,
    db: DbSession,
    prompt: str = Form(""),
    answer: str = Form(""),
    correction: str = Form(""),
    target: str = Form("base"),
):
    try:
        preference_datasets.save_correction(
            db, workspace_id=user.workspace_id, user_id=user.id, target=target, prompt=prompt, answer=answer, correction=correction
        )
    except preference_datasets.PreferenceDataError as exc:
        if is_htmx(request):
            return render(request, "_correction_saved.html", {"error": str(exc)}, status_code=422)
        raise HTTPException(422, str(exc)) from None
    if is_htmx(request):
        return render(request, "_correction_saved.html", {"error": None})
    return redirect(request, "/corrections")


@router.post("/preference-datasets/corrections")
def dataset_from_corrections(request: Request, user: CurrentUser, db: DbSession, store: Store):
    build = lambda: preference_datasets.corrections_dataset(db, store, workspace_id=user.workspace_id, user_id=user.id)  # noqa: E731
    dataset = made_dataset(request, db, user, build, "corrections")
    return redirect(request, f"/datasets/{dataset.id}?task=preference")
