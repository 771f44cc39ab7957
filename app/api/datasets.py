"""Datasets in the API: upload, list, read, delete."""

from __future__ import annotations

from fastapi import Depends, File, HTTPException, UploadFile
from fastapi.responses import JSONResponse, Response
from sqlalchemy.orm import Session

from app.api.common import api_router
from app.config import Settings
from app.models import Dataset, User
from app.schemas import DatasetDetail, DatasetPublic
from app.services import datasets
from app.services.artifacts import LocalArtifactStore
from app.web.deps import current_user, get_db, owned_dataset, settings_dep, store_dep

router = api_router()


def _dataset_detail(dataset: Dataset, store: LocalArtifactStore, settings: Settings, **extra) -> DatasetDetail:
    base = DatasetPublic.model_validate(dataset).model_dump()
    return DatasetDetail(**base, preview=datasets.preview_rows(store, dataset, settings.preview_rows), **extra)


@router.post("/datasets", status_code=201, response_model=DatasetDetail, responses={413: {}, 415: {}, 422: {}})
def upload_dataset(file: UploadFile = File(...), user: User = Depends(current_user), db: Session = Depends(get_db),
                   settings: Settings = Depends(settings_dep), store: LocalArtifactStore = Depends(store_dep)):
    """Upload a CSV (multipart field `file`). The same file uploaded twice returns the first dataset with 200."""
    from app.web.datasets import ingest_notes

    try:
        dataset, report = datasets.ingest_upload(db, store, workspace_id=user.workspace_id, user_id=user.id,
                                                 filename=file.filename or "", source=file.file, limit_bytes=settings.max_upload_bytes)
    except datasets.DatasetError as exc:
        db.rollback()
        raise HTTPException(exc.status, exc.message) from None
    db.commit()
    detail = _dataset_detail(dataset, store, settings, notes=ingest_notes(report) if report else [], already_uploaded=report is None)
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
