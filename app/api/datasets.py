"""Datasets in the API: upload, list, read (with profile), rows, token lengths, personal data
masking, label distribution, column guesses, delete."""

from __future__ import annotations

from fastapi import File, Form, HTTPException, Query, Request, UploadFile
from fastapi.responses import JSONResponse, Response

from app.api.common import api_router
from app.base_models import get_base_model
from app.config import Settings
from app.domain.task_kinds import TASK_KEY_PATTERN
from app.http import auditing
from app.http.deps import AppSettings, CurrentUser, DbSession, OwnedDataset, Store
from app.http.lookups import dataset_in_workspace
from app.http.upload import UploadRoute
from app.models import Dataset
from app.schemas import (
    ColumnGuessPublic,
    DatasetDetail,
    DatasetProfilePublic,
    DatasetPublic,
    DatasetRowPublic,
    DatasetRowsPage,
    LabelDistributionPublic,
    PersonalDataMasking,
    PersonalDataMaskingResult,
    SplitCheckFilePublic,
    SplitCheckPublic,
    TokenLengthsPublic,
)
from app.services import (
    column_guess,
    dataset_ingest,
    dataset_masking,
    dataset_store,
    dataset_tokens,
    job_checks,
    label_counts,
    stored_rows,
    task_rows,
    validation_split,
)
from app.services.artifacts import ArtifactStore
from app.services.low_priority import run_at_low_priority

router = api_router()


def _dataset_detail(dataset: Dataset, store: ArtifactStore, settings: Settings, **extra) -> DatasetDetail:
    base = DatasetPublic.model_validate(dataset).model_dump()
    extra.setdefault("notes", dataset.ingest_notes or [])
    return DatasetDetail(**base, preview=stored_rows.preview_rows(store, dataset, settings.preview_rows), profile=dataset.profile, **extra)


def upload_dataset(
    request: Request,
    user: CurrentUser,
    db: DbSession,
    settings: AppSettings,
    store: Store,
    file: UploadFile = File(...),
    sheet: str = Form("", description="Excel only: the sheet to read (default: the first)."),
):
    """Upload a CSV, .xlsx or .jsonl file (multipart field `file`). The same file uploaded twice returns the first dataset with 200."""
    try:
        dataset, report = run_at_low_priority(
            dataset_ingest.ingest_upload,
            db,
            store,
            workspace_id=user.workspace_id,
            user_id=user.id,
            filename=file.filename or "",
            source=file.file,
            limit_bytes=settings.max_upload_bytes,
            sheet=sheet,
        )
    except dataset_store.DatasetError as exc:
        db.rollback()
        raise HTTPException(exc.status, exc.message) from None
    auditing.record(request, db, user, "dataset_uploaded", ("dataset", dataset.id), {"filename": file.filename, "existing": report is None})
    # The notes of ingestion (renamed headers, ragged rows, ...) are stored with the dataset.
    detail = _dataset_detail(dataset, store, settings, already_uploaded=report is None)
    if report is None:
        return JSONResponse(detail.model_dump(mode="json"), status_code=200)
    return detail


router.add_api_route(
    "/datasets",
    upload_dataset,
    methods=["POST"],
    status_code=201,
    response_model=DatasetDetail,
    responses={413: {}, 415: {}, 422: {}},
    route_class_override=UploadRoute,
)


@router.get("/datasets", response_model=list[DatasetPublic])
def list_datasets(user: CurrentUser, db: DbSession):
    return dataset_ingest.datasets_for(db, user.workspace_id)


@router.get("/datasets/{dataset_id}", response_model=DatasetDetail)
def get_dataset(dataset: OwnedDataset, store: Store, settings: AppSettings):
    return _dataset_detail(dataset, store, settings)


@router.get("/datasets/{dataset_id}/profile", response_model_exclude_unset=True)
def get_profile(dataset: OwnedDataset) -> DatasetProfilePublic:
    """Row count, per-column type guess, empties, lengths, frequent values, personal data and duplicates."""
    if dataset.profile is None:
        raise HTTPException(404, "This dataset was stored before profiles existed; upload it again to profile it.")
    return DatasetProfilePublic(**dataset.profile)


@router.get("/datasets/{dataset_id}/rows", response_model=DatasetRowsPage)
def get_rows(
    dataset: OwnedDataset,
    store: Store,
    page: int = Query(1, ge=1),
    q: str = Query("", max_length=200, description="Only rows containing this text (any column)."),
    page_size: int = Query(25, ge=1, le=500),
):
    """A page of rows, optionally searched; formula-like cells start with an apostrophe."""
    result = stored_rows.page_rows(store, dataset, page, q, page_size)
    return DatasetRowsPage(
        page=result.page,
        page_size=result.page_size,
        query=result.query,
        has_next=result.has_next,
        total=result.total,
        rows=[DatasetRowPublic(row=n, cells=cells) for n, cells in result.rows],
    )


@router.get("/datasets/{dataset_id}/token-lengths")
def get_token_lengths(
    base_model: str,
    dataset: OwnedDataset,
    settings: AppSettings,
    store: Store,
    max_length: int = Query(512, ge=1, le=1_000_000),
    columns: list[str] = Query(default_factory=list, description="Columns to measure together; default: the text columns."),
) -> TokenLengthsPublic:
    """Length in tokens with the base model's tokenizer: histogram, percentiles, rows over max_length."""
    model = get_base_model(settings, base_model)
    if model is None or not model.available:
        raise HTTPException(404, f"There is no installed base model {base_model!r}.")
    if not columns:
        by_name = {c["name"]: c for c in (dataset.profile or {}).get("columns", [])}
        columns = [c for c in dataset.columns if by_name.get(c, {}).get("type", "text") == "text"] or dataset.columns[:1]
    try:
        report = run_at_low_priority(
            dataset_tokens.token_lengths,
            store,
            dataset,
            model_key=model.key,
            model_location=model.location,
            columns=columns,
            max_length=max_length,
        )
    except dataset_store.DatasetError as exc:
        raise HTTPException(exc.status, exc.message) from None
    return TokenLengthsPublic(**report)


@router.post("/datasets/{dataset_id}/personal-data", response_model=PersonalDataMaskingResult)
def set_personal_data_masking(body: PersonalDataMasking, dataset: OwnedDataset, db: DbSession, store: Store):
    """Train on a copy with personal data masked (the original stays unchanged), or on the original again."""
    masked = run_at_low_priority(dataset_masking.set_pii_masking, db, store, dataset, body.mask)
    return PersonalDataMaskingResult(pii_masked=dataset.pii_masked, masked=masked)


@router.get("/datasets/{dataset_id}/labels", response_model=LabelDistributionPublic)
def get_label_distribution(column: str, dataset: OwnedDataset, store: Store):
    """How often each value of a label column occurs, with rare-label warnings and blocking problems."""
    return LabelDistributionPublic(column=column, **label_counts.label_distribution(store, dataset, column).as_dict())


@router.get("/datasets/{dataset_id}/column-guess")
def get_column_guess(dataset: OwnedDataset, store: Store, task: str = Query("instruction", pattern=TASK_KEY_PATTERN)) -> ColumnGuessPublic:
    """Which columns probably fill each role of a task, from their names and content."""
    return ColumnGuessPublic(**column_guess.guess_columns(task, dataset.columns, stored_rows.sample_rows(store, dataset)))


@router.get("/datasets/{dataset_id}/split-check")
def get_split_check(
    dataset: OwnedDataset,
    store: Store,
    user: CurrentUser,
    db: DbSession,
    task: str = Query("instruction", pattern=TASK_KEY_PATTERN),
    prompt: str = "",
    response: str = "",
    text: str = "",
    label: str = "",
    text_columns: list[str] = Query(default_factory=list),
    validation_fraction: float = Query(0.1, gt=0, lt=1),
    seed: int = 0,
    validation_dataset_id: int | None = None,
) -> SplitCheckFilePublic | SplitCheckPublic:
    """The validation rows a job would get and those that also appear in training, exactly or
    nearly (the leakage check): a held-out share (at least 1 row; stratified for classification),
    or, with validation_dataset_id, every row of that validation file against every training row."""
    mapping = {"prompt": prompt, "response": response, "text": text, "label": label, "text_columns": text_columns}
    try:
        if validation_dataset_id is None:
            return SplitCheckPublic(
                **validation_split.split_check(store, dataset, task, mapping, validation_fraction, seed), source="split"
            )
        validation = dataset_in_workspace(db, validation_dataset_id, user)
        problems = job_checks.validation_file_errors(store, dataset, validation, task, mapping)
        if problems:
            raise HTTPException(422, problems["validation_dataset"])
        train, held_out, summary = task_rows.train_validation_rows(
            store, dataset, task, mapping, fraction=validation_fraction, seed=seed, validation_dataset=validation
        )
    except dataset_store.DatasetError as exc:
        raise HTTPException(exc.status, exc.message) from None
    return SplitCheckFilePublic(
        train_rows=len(train),
        validation_rows=len(held_out),
        stratified=False,
        source="file",
        validation_dataset_id=validation.id,
        leakage=summary["leakage"],
    )


@router.delete("/datasets/{dataset_id}", status_code=204)
def delete_dataset(request: Request, dataset: OwnedDataset, user: CurrentUser, db: DbSession, store: Store):
    target, name = ("dataset", dataset.id), dataset.name
    try:
        dataset_ingest.delete_dataset(db, store, dataset)
    except dataset_store.DatasetError as exc:
        raise HTTPException(exc.status, exc.message) from None
    auditing.record(request, db, user, "dataset_deleted", target, {"name": name})
    return Response(status_code=204)
