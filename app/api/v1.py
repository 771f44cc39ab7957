"""The JSON API: every page's data, for scripts. Bearer tokens (`tailor create-token`) or the
browser session (with the X-CSRF-Token header for writes)."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter, Depends, File, HTTPException, UploadFile
from fastapi.responses import JSONResponse, Response
from sqlalchemy.orm import Session

from app.base_models import list_base_models
from app.config import Settings
from app.models import Adapter, Dataset, Job, User
from app.schemas import (AdapterPublic, BaseModelPublic, DatasetDetail, DatasetPublic, JobCreate, JobDetail, JobPublic,
                         MetricPointPublic, TechniquePublic)
from app.services import adapters, datasets, jobs
from app.services.artifacts import LocalArtifactStore
from app.techniques import CATALOGUE
from app.web.deps import current_user, get_db, owned_adapter, owned_dataset, owned_job, settings_dep, store_dep, verify_csrf
from app.web.pages import _send_wakeup, adapter_zip_response

router = APIRouter(prefix="/api/v1", dependencies=[Depends(current_user), Depends(verify_csrf)])


def _dataset_detail(dataset: Dataset, store: LocalArtifactStore, settings: Settings, **extra) -> DatasetDetail:
    base = DatasetPublic.model_validate(dataset).model_dump()
    return DatasetDetail(**base, preview=datasets.preview_rows(store, dataset, settings.preview_rows), **extra)


@router.post("/datasets", status_code=201, response_model=DatasetDetail, responses={413: {}, 415: {}, 422: {}})
def upload_dataset(file: UploadFile = File(...), user: User = Depends(current_user), db: Session = Depends(get_db),
                   settings: Settings = Depends(settings_dep), store: LocalArtifactStore = Depends(store_dep)):
    """Upload a CSV (multipart field `file`). The same file uploaded twice returns the first dataset with 200."""
    try:
        dataset, report = datasets.ingest_upload(db, store, workspace_id=user.workspace_id, user_id=user.id,
                                                 filename=file.filename or "", source=file.file, limit_bytes=settings.max_upload_bytes)
    except datasets.DatasetError as exc:
        db.rollback()
        raise HTTPException(exc.status, exc.message) from None
    db.commit()
    notes = [] if report is None else report.renamed_headers + ([f"{len(report.ragged_rows)} ragged row(s) at lines {report.ragged_rows[:10]}"] if report.ragged_rows else [])
    detail = _dataset_detail(dataset, store, settings, notes=notes, already_uploaded=report is None)
    if report is None:
        return JSONResponse(detail.model_dump(mode="json"), status_code=200)
    return detail


@router.get("/datasets", response_model=list[DatasetPublic])
def list_datasets(user: User = Depends(current_user), db: Session = Depends(get_db)):
    return datasets.datasets_for(db, user.workspace_id)


@router.get("/datasets/{dataset_id}", response_model=DatasetDetail)
def get_dataset(dataset: Dataset = Depends(owned_dataset), store: LocalArtifactStore = Depends(store_dep), settings: Settings = Depends(settings_dep)):
    return _dataset_detail(dataset, store, settings)


@router.delete("/datasets/{dataset_id}", status_code=204)
def delete_dataset(dataset: Dataset = Depends(owned_dataset), db: Session = Depends(get_db), store: LocalArtifactStore = Depends(store_dep)):
    try:
        datasets.delete_dataset(db, store, dataset)
    except datasets.DatasetError as exc:
        raise HTTPException(exc.status, exc.message) from None
    return Response(status_code=204)


@router.get("/techniques", response_model=list[TechniquePublic])
def list_techniques():
    return [
        TechniquePublic(**{k: v for k, v in asdict(t).items() if k != "params"},
                        params=[{**asdict(p), "choices": list(p.choices)} for p in t.all_params])
        for t in CATALOGUE.values()
    ]


@router.get("/base-models", response_model=list[BaseModelPublic])
def list_models(settings: Settings = Depends(settings_dep)):
    return [BaseModelPublic(**{**asdict(m), "available": m.available}) for m in list_base_models(settings)]


def _job_public(db: Session, job: Job, model=JobPublic, **extra):
    adapter = adapters.adapter_for_job(db, job.id)
    data = JobPublic.model_validate(job).model_dump()
    data["adapter_id"] = adapter.id if adapter else None
    return model(**data, **extra)


@router.post("/jobs", status_code=201, response_model=JobPublic, responses={404: {}, 422: {}})
def create_job(body: JobCreate, user: User = Depends(current_user), db: Session = Depends(get_db),
               settings: Settings = Depends(settings_dep), store: LocalArtifactStore = Depends(store_dep)):
    dataset = db.get(Dataset, body.dataset_id)
    if dataset is None or dataset.workspace_id != user.workspace_id:
        raise HTTPException(404, "There is no such dataset in your workspace.")
    try:
        job = jobs.submit_job(db, settings, store, workspace_id=user.workspace_id, user_id=user.id, dataset=dataset, task=body.task,
                              column_mapping=body.column_mapping, base_model=body.base_model, technique=body.technique,
                              params=body.params, seed=body.seed, name=body.name)
    except jobs.JobError as exc:
        db.rollback()
        raise HTTPException(422, {"message": "The job was not created: " + str(exc), "errors": exc.errors}) from None
    db.commit()
    _send_wakeup(db, job)
    return _job_public(db, job)


@router.get("/jobs", response_model=list[JobPublic])
def list_jobs(user: User = Depends(current_user), db: Session = Depends(get_db)):
    return [_job_public(db, job) for job in jobs.jobs_for(db, user.workspace_id, limit=500)]


@router.get("/jobs/{job_id}", response_model=JobDetail)
def get_job(job: Job = Depends(owned_job), db: Session = Depends(get_db)):
    points = [MetricPointPublic.model_validate(p) for p in jobs.metric_points(db, job.id)]
    return _job_public(db, job, JobDetail, metrics=points)


@router.post("/jobs/{job_id}/cancel", response_model=JobPublic)
def cancel_job(job: Job = Depends(owned_job), db: Session = Depends(get_db)):
    jobs.request_cancel(db, job)
    db.commit()
    return _job_public(db, job)


def _adapter_public(adapter: Adapter) -> AdapterPublic:
    return AdapterPublic.model_validate(adapter).model_copy(update={"download_url": f"/api/v1/adapters/{adapter.id}/download"})


@router.get("/adapters", response_model=list[AdapterPublic])
def list_adapters(user: User = Depends(current_user), db: Session = Depends(get_db)):
    return [_adapter_public(a) for a in adapters.adapters_for(db, user.workspace_id)]


@router.get("/adapters/{adapter_id}", response_model=AdapterPublic)
def get_adapter(adapter: Adapter = Depends(owned_adapter)):
    return _adapter_public(adapter)


@router.get("/adapters/{adapter_id}/download", response_class=Response, responses={200: {"content": {"application/zip": {}}}})
def download_adapter(adapter: Adapter = Depends(owned_adapter), store: LocalArtifactStore = Depends(store_dep)):
    """The adapter as a zip: adapter_config.json, adapter_model.safetensors and a README model card."""
    return adapter_zip_response(adapter, store)
