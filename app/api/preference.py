"""Preference datasets in the API: how many pairs the blind review votes yield, and datasets built
from the votes or from playground corrections; corrections themselves."""

from __future__ import annotations

from fastapi import HTTPException, Query, Request

from app.api.common import api_router
from app.http.deps import CurrentUser, DbSession, Store
from app.http.lookups import adapter_in_workspace
from app.http.made_datasets import made_dataset
from app.schemas import CorrectionCreate, CorrectionPublic, DatasetPublic, VoteCounts, VotesDatasetCreate
from app.services import preference_datasets

router = api_router()


def _scope(db, user, adapter_ids: list[int], comparison: bool) -> preference_datasets.VoteScope:
    ids = tuple(adapter_in_workspace(db, i, user).id for i in adapter_ids)  # 404 for another workspace's adapter
    return preference_datasets.VoteScope(ids, comparison=comparison and bool(ids))


@router.get("/preference-datasets/votes", responses={404: {}})
def vote_counts(user: CurrentUser, db: DbSession, adapter_ids: list[int] = Query(default=[]), comparison: bool = False) -> VoteCounts:
    """How many chosen/rejected pairs the voted blind pairs yield (ties and identical answers left out)."""
    return VoteCounts(**preference_datasets.vote_counts(db, user.workspace_id, _scope(db, user, adapter_ids, comparison)))


@router.post("/preference-datasets/votes", status_code=201, responses={404: {}, 409: {}})
def dataset_from_votes(request: Request, body: VotesDatasetCreate, user: CurrentUser, db: DbSession, store: Store) -> DatasetPublic:
    """A preference dataset (prompt, chosen, rejected, chosen_by, rejected_by) from the votes: no
    adapter_ids = the whole workspace; comparison = only pairs among these adapters and the base model."""
    scope = _scope(db, user, body.adapter_ids, body.comparison)
    build = lambda: preference_datasets.votes_dataset(db, store, workspace_id=user.workspace_id, user_id=user.id, scope=scope)  # noqa: E731
    return DatasetPublic.model_validate(made_dataset(request, db, user, build, "review_votes"))


@router.get("/corrections")
def list_corrections(user: CurrentUser, db: DbSession) -> list[CorrectionPublic]:
    return [CorrectionPublic.model_validate(c) for c in preference_datasets.corrections_for(db, user.workspace_id)]


@router.post("/corrections", status_code=201, responses={422: {}})
def create_correction(body: CorrectionCreate, user: CurrentUser, db: DbSession) -> CorrectionPublic:
    """A better answer for a prompt: the model's answer becomes the rejected one, the correction the chosen one."""
    try:
        row = preference_datasets.save_correction(
            db,
            workspace_id=user.workspace_id,
            user_id=user.id,
            target=body.target,
            prompt=body.prompt,
            answer=body.answer,
            correction=body.correction,
        )
    except preference_datasets.PreferenceDataError as exc:
        raise HTTPException(422, str(exc)) from None
    return CorrectionPublic.model_validate(row)


@router.post("/preference-datasets/corrections", status_code=201, responses={409: {}})
def dataset_from_corrections(request: Request, user: CurrentUser, db: DbSession, store: Store) -> DatasetPublic:
    build = lambda: preference_datasets.corrections_dataset(db, store, workspace_id=user.workspace_id, user_id=user.id)  # noqa: E731
    return DatasetPublic.model_validate(made_dataset(request, db, user, build, "corrections"))
