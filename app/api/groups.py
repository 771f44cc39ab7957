"""Bake-offs in the API."""

from __future__ import annotations

from fastapi import HTTPException, Request

from app.api.common import api_router
from app.http import auditing
from app.http.deps import AppSettings, CurrentUser, DbSession, Store
from app.http.lookups import dataset_in_workspace, group_or_404
from app.schemas import BakeoffCreate, BakeoffCreated, BakeoffJobPublic, BakeoffPublic
from app.services import bakeoff, jobs

router = api_router()


@router.get("/groups/{group_id}")
def get_group(group_id: str, user: CurrentUser, db: DbSession, store: Store) -> BakeoffPublic:
    """The bake-off's jobs, whether training and evaluation are done, and the recommendation in words."""
    group = group_or_404(db, store, user, group_id)
    state = group["state"]
    return BakeoffPublic(
        group_id=group_id,
        finished=state.finished,
        training_done=state.training_done,
        jobs=[
            BakeoffJobPublic(
                id=j.id,
                name=j.name,
                technique=j.technique,
                status=j.status,
                error=j.error,
                adapter_id=state.adapters[j.id].id if j.id in state.adapters else None,
                evaluation_state=state.adapters[j.id].evaluation_state if j.id in state.adapters else None,
            )
            for j in state.jobs
        ],
        adapter_ids=state.adapter_ids,
        recommendation=group["recommendation"],
        compare_url=f"/compare?ids={','.join(map(str, state.adapter_ids))}" if state.adapter_ids else None,
    )


@router.post("/bakeoffs", status_code=201)
def create_bakeoff(
    request: Request, body: BakeoffCreate, user: CurrentUser, db: DbSession, settings: AppSettings, store: Store
) -> BakeoffCreated:
    """Queue one job per technique on the same data; follow them at GET /groups/{group_id}."""
    dataset = dataset_in_workspace(db, body.dataset_id, user)
    validation = dataset_in_workspace(db, body.validation_dataset_id, user) if body.validation_dataset_id is not None else None
    try:
        group_id, created = bakeoff.submit_bakeoff(
            db,
            settings,
            store,
            workspace_id=user.workspace_id,
            user_id=user.id,
            dataset=dataset,
            task=body.task,
            column_mapping=body.column_mapping,
            base_model=body.base_model,
            techniques=body.techniques,
            params=body.params,
            seed=body.seed,
            preset=body.preset,
            validation_dataset=validation,
        )
    except jobs.JobError as exc:
        db.rollback()
        raise HTTPException(422, {"message": "The bake-off was not started: " + str(exc), "errors": exc.errors}) from None
    for job in created:
        jobs.send_wakeup(db, job)
    auditing.record(request, db, user, "bakeoff_started", ("group", group_id), {"job_ids": [j.id for j in created]})
    return BakeoffCreated(group_id=group_id, job_ids=[j.id for j in created], url=f"/groups/{group_id}")
