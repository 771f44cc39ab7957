"""Bake-offs in the API."""

from __future__ import annotations

from typing import Any

from fastapi import Depends, HTTPException
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from app.api.common import api_router
from app.config import Settings
from app.models import User
from app.services import bakeoff, jobs
from app.services.artifacts import ArtifactStore
from app.web.deps import current_user, dataset_in_workspace, get_db, settings_dep, store_dep
from app.web.groups import group_context

router = api_router()


@router.get("/groups/{group_id}")
def get_group(group_id: str, user: User = Depends(current_user), db: Session = Depends(get_db), store: ArtifactStore = Depends(store_dep)) -> dict:
    """The bake-off's jobs, whether training and evaluation are done, and the recommendation in words."""
    ctx = group_context(db, store, user, group_id)
    state = ctx["state"]
    return {
        "group_id": group_id, "finished": state.finished, "training_done": state.training_done,
        "jobs": [{"id": j.id, "name": j.name, "technique": j.technique, "status": j.status, "error": j.error,
                  "adapter_id": state.adapters[j.id].id if j.id in state.adapters else None,
                  "evaluation_state": state.adapters[j.id].evaluation_state if j.id in state.adapters else None}
                 for j in state.jobs],
        "adapter_ids": state.adapter_ids,
        "recommendation": ctx["recommendation"],
        "compare_url": f"/compare?ids={','.join(map(str, state.adapter_ids))}" if state.adapter_ids else None,
    }


class BakeoffCreate(BaseModel):
    dataset_id: int
    task: str = "instruction"
    column_mapping: dict[str, Any]
    base_model: str
    techniques: list[str] = Field(..., description="Two to six technique keys from GET /techniques.")
    params: dict[str, Any] = Field(default_factory=dict, description="Shared training settings: epochs, batch_size, max_length, validation_fraction, max_steps.")
    seed: int = 0
    preset: str | None = None
    validation_dataset_id: int | None = Field(None, description="Another dataset of the workspace to validate on instead of holding out a share.")


@router.post("/bakeoffs", status_code=201)
def create_bakeoff(body: BakeoffCreate, user: User = Depends(current_user), db: Session = Depends(get_db),
                   settings: Settings = Depends(settings_dep), store: ArtifactStore = Depends(store_dep)) -> dict:
    """Queue one job per technique on the same data; follow them at GET /groups/{group_id}."""
    dataset = dataset_in_workspace(db, body.dataset_id, user)
    validation = dataset_in_workspace(db, body.validation_dataset_id, user) if body.validation_dataset_id is not None else None
    try:
        group_id, created = bakeoff.submit_bakeoff(db, settings, store, workspace_id=user.workspace_id, user_id=user.id, dataset=dataset,
                                                   task=body.task, column_mapping=body.column_mapping, base_model=body.base_model,
                                                   techniques=body.techniques, params=body.params, seed=body.seed, preset=body.preset,
                                                   validation_dataset=validation)
    except jobs.JobError as exc:
        db.rollback()
        raise HTTPException(422, {"message": "The bake-off was not started: " + str(exc), "errors": exc.errors}) from None
    db.commit()
    for job in created:
        jobs.send_wakeup(db, job)
    return {"group_id": group_id, "job_ids": [j.id for j in created], "url": f"/groups/{group_id}"}
