"""Datasets in the API: upload, list, read (with profile), rows, token lengths, personal data
masking, label distribution, column guesses, delete."""

from __future__ import annotations

from typing import Any

from fastapi import Depends, File, Form, HTTPException, Query, UploadFile
from fastapi.responses import JSONResponse, Response
from sqlalchemy.orm import Session

from app.api.common import api_router
from app.base_models import get_base_model
from app.config import Settings
from app.models import Dataset, User
from app.schemas import (
    DatasetDetail, DatasetPublic, DatasetRowPublic, DatasetRowsPage, LabelDistributionPublic, PersonalDataMasking,
    PersonalDataMaskingResult,
)
from app.services import datasets, job_checks, task_rows
from app.services.artifacts import LocalArtifactStore
from app.services.low_priority import run_at_low_priority
from app.web.datasets import UploadRoute, ingest_notes
from app.web.deps import current_user, dataset_in_workspace, get_db, owned_dataset, settings_dep, store_dep

router = api_router()


def _dataset_detail(dataset: Dataset, store: LocalArtifactStore, settings: Settings, **extra) -> DatasetDetail:
    base = DatasetPublic.model_validate(dataset).model_dump()
    extra.setdefault("notes", dataset.ingest_notes or [])
    return DatasetDetail(**base, preview=datasets.preview_rows(store, dataset, settings.preview_rows), profile=dataset.profile, **extra)


def upload_dataset(file: UploadFile = File(...), sheet: str = Form("", description="Excel only: the sheet to read (default: the first)."),
                   user: User = Depends(current_user), db: Session = Depends(get_db),
                   settings: Settings = Depends(settings_dep), store: LocalArtifactStore = Depends(store_dep)):
    """Upload a CSV, .xlsx or .jsonl file (multipart field `file`). The same file uploaded twice returns the first dataset with 200."""
    try:
        dataset, report = run_at_low_priority(datasets.ingest_upload, db, store, workspace_id=user.workspace_id, user_id=user.id, filename=file.filename or "",
                                                 source=file.file, limit_bytes=settings.max_upload_bytes, sheet=sheet)
    except datasets.DatasetError as exc:
        db.rollback()
        raise HTTPException(exc.status, exc.message) from None
    db.commit()
    detail = _dataset_detail(dataset, store, settings, notes=ingest_notes(report) if report else (dataset.ingest_notes or []),
                             already_uploaded=report is None)
    if report is None:
        return JSONResponse(detail.model_dump(mode="json"), status_code=200)
    return detail


router.add_api_route("/datasets", upload_dataset, methods=["POST"], status_code=201, response_model=DatasetDetail,
                     responses={413: {}, 415: {}, 422: {}}, route_class_override=UploadRoute)


@router.get("/datasets", response_model=list[DatasetPublic])
def list_datasets(user: User = Depends(current_user), db: Session = Depends(get_db)):
    return datasets.datasets_for(db, user.workspace_id)


@router.get("/datasets/{dataset_id}", response_model=DatasetDetail)
def get_dataset(dataset: Dataset = Depends(owned_dataset), store: LocalArtifactStore = Depends(store_dep), settings: Settings = Depends(settings_dep)):
    return _dataset_detail(dataset, store, settings)


@router.get("/datasets/{dataset_id}/profile")
def get_profile(dataset: Dataset = Depends(owned_dataset)) -> dict[str, Any]:
    """Row count, per-column type guess, empties, lengths, frequent values, personal data and duplicates."""
    if dataset.profile is None:
        raise HTTPException(404, "This dataset was stored before profiles existed; upload it again to profile it.")
    return dataset.profile


@router.get("/datasets/{dataset_id}/rows", response_model=DatasetRowsPage)
def get_rows(page: int = Query(1, ge=1), q: str = Query("", max_length=200, description="Only rows containing this text (any column)."),
             page_size: int = Query(25, ge=1, le=500), dataset: Dataset = Depends(owned_dataset),
             store: LocalArtifactStore = Depends(store_dep)):
    """A page of rows, optionally searched; formula-like cells start with an apostrophe."""
    result = datasets.page_rows(store, dataset, page, q, page_size)
    return DatasetRowsPage(page=result.page, page_size=result.page_size, query=result.query, has_next=result.has_next, total=result.total,
                           rows=[DatasetRowPublic(row=n, cells=cells) for n, cells in result.rows])


@router.get("/datasets/{dataset_id}/token-lengths")
def get_token_lengths(base_model: str, max_length: int = Query(512, ge=1, le=1_000_000),
                      columns: list[str] = Query(default_factory=list, description="Columns to measure together; default: the text columns."),
                      dataset: Dataset = Depends(owned_dataset), settings: Settings = Depends(settings_dep),
                      store: LocalArtifactStore = Depends(store_dep)) -> dict[str, Any]:
    """Length in tokens with the base model's tokenizer: histogram, percentiles, rows over max_length."""
    model = get_base_model(settings, base_model)
    if model is None or not model.available:
        raise HTTPException(404, f"There is no installed base model {base_model!r}.")
    if not columns:
        by_name = {c["name"]: c for c in (dataset.profile or {}).get("columns", [])}
        columns = [c for c in dataset.columns if by_name.get(c, {}).get("type", "text") == "text"] or dataset.columns[:1]
    try:
        return run_at_low_priority(datasets.token_lengths, store, dataset, model_key=model.key, model_location=model.location, columns=columns, max_length=max_length)
    except datasets.DatasetError as exc:
        raise HTTPException(exc.status, exc.message) from None


@router.post("/datasets/{dataset_id}/personal-data", response_model=PersonalDataMaskingResult)
def set_personal_data_masking(body: PersonalDataMasking, dataset: Dataset = Depends(owned_dataset), db: Session = Depends(get_db),
                              store: LocalArtifactStore = Depends(store_dep)):
    """Train on a copy with personal data masked (the original stays unchanged), or on the original again."""
    masked = run_at_low_priority(datasets.set_pii_masking, db, store, dataset, body.mask)
    db.commit()
    return PersonalDataMaskingResult(pii_masked=dataset.pii_masked, masked=masked)


@router.get("/datasets/{dataset_id}/labels", response_model=LabelDistributionPublic)
def get_label_distribution(column: str, dataset: Dataset = Depends(owned_dataset), store: LocalArtifactStore = Depends(store_dep)):
    """How often each value of a label column occurs, with rare-label warnings and blocking problems."""
    return LabelDistributionPublic(column=column, **datasets.label_distribution(store, dataset, column).as_dict())


@router.get("/datasets/{dataset_id}/column-guess")
def get_column_guess(task: str = Query("instruction", pattern="^(instruction|text|classification)$"),
                     dataset: Dataset = Depends(owned_dataset), store: LocalArtifactStore = Depends(store_dep)) -> dict[str, Any]:
    """Which columns probably fill each role of a task, from their names and content."""
    return datasets.guess_columns(task, dataset.columns, datasets.sample_rows(store, dataset))


@router.get("/datasets/{dataset_id}/split-check")
def get_split_check(task: str = Query("instruction", pattern="^(instruction|text|classification)$"),
                    prompt: str = "", response: str = "", text: str = "", label: str = "",
                    text_columns: list[str] = Query(default_factory=list),
                    validation_fraction: float = Query(0.1, gt=0, lt=1), seed: int = 0,
                    validation_dataset_id: int | None = None,
                    dataset: Dataset = Depends(owned_dataset), store: LocalArtifactStore = Depends(store_dep),
                    user: User = Depends(current_user), db: Session = Depends(get_db)) -> dict[str, Any]:
    """The validation rows a job would get and those that also appear in training, exactly or
    nearly (the leakage check): a held-out share (at least 1 row; stratified for classification),
    or, with validation_dataset_id, every row of that validation file against every training row."""
    mapping = {"prompt": prompt, "response": response, "text": text, "label": label, "text_columns": text_columns}
    try:
        if validation_dataset_id is None:
            return {**datasets.split_check(store, dataset, task, mapping, validation_fraction, seed), "source": "split"}
        validation = dataset_in_workspace(db, validation_dataset_id, user)
        problems = job_checks.validation_file_errors(store, dataset, validation, task, mapping)
        if problems:
            raise HTTPException(422, problems["validation_dataset"])
        train, held_out, summary = task_rows.train_validation_rows(store, dataset, task, mapping, fraction=validation_fraction, seed=seed,
                                                               validation_dataset=validation)
    except datasets.DatasetError as exc:
        raise HTTPException(exc.status, exc.message) from None
    return {"train_rows": len(train), "validation_rows": len(held_out), "stratified": False, "source": "file",
            "validation_dataset_id": validation.id, "leakage": summary["leakage"]}


@router.delete("/datasets/{dataset_id}", status_code=204)
def delete_dataset(dataset: Dataset = Depends(owned_dataset), db: Session = Depends(get_db), store: LocalArtifactStore = Depends(store_dep)):
    try:
        datasets.delete_dataset(db, store, dataset)
    except datasets.DatasetError as exc:
        raise HTTPException(exc.status, exc.message) from None
    return Response(status_code=204)
