"""Jobs in the API: submit, list, read (with metric points), cancel."""

from __future__ import annotations

from fastapi import HTTPException, Request
from sqlalchemy.orm import Session

from app.api.common import api_router
from app.http import auditing
from app.http.deps import AppSettings, CurrentUser, DbSession, OwnedJob, Store
from app.http.lookups import adapter_in_workspace, dataset_in_workspace
from app.models import Job
from app.schemas import JobAttemptPublic, JobCreate, JobDetail, JobPreviewPublic, JobPreviewRequest, JobPublic, MetricPointPublic
from app.services import adapters, attempts, jobs, row_preview, task_rows

router = api_router()


def job_public(db: Session, job: Job, model=JobPublic, **extra):
    adapter = adapters.adapter_for_job(db, job.id)
    data = JobPublic.model_validate(job).model_dump()
    data["adapter_id"] = adapter.id if adapter else None
    data["validation"] = (job.result or {}).get("validation")
    return model(**data, **extra)


@router.post("/jobs", status_code=201, response_model=JobPublic, responses={404: {}, 422: {}})
def create_job(request: Request, body: JobCreate, user: CurrentUser, db: DbSession, settings: AppSettings, store: Store):
    dataset = dataset_in_workspace(db, body.dataset_id, user)
    validation = dataset_in_workspace(db, body.validation_dataset_id, user) if body.validation_dataset_id is not None else None
    parent = adapter_in_workspace(db, body.parent_adapter_id, user) if body.parent_adapter_id is not None else None
    try:
        job = jobs.submit_job(
            db,
            settings,
            store,
            workspace_id=user.workspace_id,
            user_id=user.id,
            dataset=dataset,
            task=body.task,
            column_mapping=body.column_mapping,
            base_model=body.base_model,
            technique=body.technique,
            params=body.params,
            seed=body.seed,
            name=body.name,
            preset=body.preset,
            validation_dataset=validation,
            parent_adapter=parent,
            devices=body.devices,
            strategy=body.strategy,
            cpu_offload=body.cpu_offload,
        )
    except jobs.JobError as exc:
        db.rollback()
        raise HTTPException(422, {"message": "The job was not created: " + str(exc), "errors": exc.errors}) from None
    jobs.send_wakeup(db, job)
    auditing.record(request, db, user, "job_started", ("job", job.id), {"technique": job.technique, "base_model": job.base_model})
    return job_public(db, job)


@router.post("/jobs/preview", responses={404: {}, 422: {}})
def preview_job_rows(body: JobPreviewRequest, user: CurrentUser, db: DbSession, settings: AppSettings, store: Store) -> JobPreviewPublic:
    """The first rows exactly as the model will see them: each token's text, whether it carries the
    loss, the token ids and loss mask the engine trains on, truncation notes; class ids for classifiers."""
    from app.services.prompt_preview import PreviewError

    dataset = dataset_in_workspace(db, body.dataset_id, user)
    validation = dataset_in_workspace(db, body.validation_dataset_id, user) if body.validation_dataset_id is not None else None
    try:
        examples = row_preview.preview_examples(
            settings,
            store,
            dataset,
            task=body.task,
            mapping=body.column_mapping,
            base_model=body.base_model,
            max_length=body.max_length,
            validation_dataset=validation,
            count=body.rows,
        )
    except PreviewError as exc:
        raise HTTPException(422, {"message": str(exc)}) from None
    skipped = task_rows.skipped_rows(store, dataset, body.task, body.column_mapping)
    return JobPreviewPublic(max_length=body.max_length, examples=[e.as_dict() for e in examples], skipped=skipped)


@router.get("/jobs", response_model=list[JobPublic])
def list_jobs(user: CurrentUser, db: DbSession):
    return [job_public(db, job) for job in jobs.jobs_for(db, user.workspace_id, limit=500)]


@router.get("/jobs/{job_id}", response_model=JobDetail)
def get_job(job: OwnedJob, db: DbSession):
    points = [MetricPointPublic.model_validate(p) for p in jobs.metric_points(db, job.id)]
    history = [JobAttemptPublic.model_validate(a) for a in attempts.attempts_for(db, job.id)]
    return job_public(db, job, JobDetail, metrics=points, attempts=history)


@router.post("/jobs/{job_id}/cancel", response_model=JobPublic)
def cancel_job(request: Request, job: OwnedJob, user: CurrentUser, db: DbSession):
    jobs.request_cancel(db, job)
    auditing.record(request, db, user, "job_cancelled", ("job", job.id))
    return job_public(db, job)
