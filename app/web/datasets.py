"""Dataset pages: upload, preview, delete. The training form on the dataset page comes from
app/web/jobs.py (`train_form_context`)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, File, Request, UploadFile
from sqlalchemy.orm import Session

from app.config import Settings
from app.models import Dataset, User
from app.services import datasets
from app.services.artifacts import LocalArtifactStore
from app.web.deps import current_user, get_db, owned_dataset, settings_dep, store_dep, verify_csrf
from app.web.jobs import train_form_context
from app.web.responses import is_htmx, redirect
from app.web.templating import render

router = APIRouter(dependencies=[Depends(verify_csrf)])


@router.get("/datasets/new")
def new_dataset_page(request: Request, user: User = Depends(current_user), settings: Settings = Depends(settings_dep)):
    return render(request, "dataset_new.html", {"max_upload": settings.max_upload_bytes})


@router.post("/datasets")
def upload_dataset(request: Request, file: UploadFile = File(...), user: User = Depends(current_user),
                   db: Session = Depends(get_db), settings: Settings = Depends(settings_dep), store: LocalArtifactStore = Depends(store_dep)):
    try:
        dataset, report = datasets.ingest_upload(db, store, workspace_id=user.workspace_id, user_id=user.id, filename=file.filename or "",
                                                 source=file.file, limit_bytes=settings.max_upload_bytes)
    except datasets.DatasetError as exc:
        db.rollback()
        template = "_upload_form.html" if is_htmx(request) else "dataset_new.html"
        return render(request, template, {"error": exc.message, "max_upload": settings.max_upload_bytes}, status_code=exc.status)
    db.commit()
    if report is not None and (report.ragged_rows or report.renamed_headers):
        request.session[f"dataset-notes-{dataset.id}"] = ingest_notes(report)
    suffix = "?existing=1" if report is None else ""
    return redirect(request, f"/datasets/{dataset.id}{suffix}")


def ingest_notes(report: datasets.IngestReport) -> list[str]:
    notes = list(report.renamed_headers)
    if report.ragged_rows:
        shown = ", ".join(str(n) for n in report.ragged_rows[:10])
        more = f" and {len(report.ragged_rows) - 10} more" if len(report.ragged_rows) > 10 else ""
        notes.append(f"{len(report.ragged_rows)} row(s) had a different number of cells than the header (lines {shown}{more}); missing cells were left empty and extra cells dropped.")
    return notes


def dataset_context(request: Request, dataset: Dataset, settings: Settings, store: LocalArtifactStore, **extra) -> dict:
    """Everything the dataset page shows: profile and preview, plus the training form."""
    ctx = {
        "dataset": dataset,
        "preview": datasets.preview_rows(store, dataset, settings.preview_rows),
        "notes": request.session.get(f"dataset-notes-{dataset.id}", []),
        "existing": request.query_params.get("existing") == "1",
    }
    ctx.update(train_form_context(dataset, settings))
    ctx.update(extra)
    return ctx


@router.get("/datasets/{dataset_id}")
def dataset_page(request: Request, dataset: Dataset = Depends(owned_dataset), settings: Settings = Depends(settings_dep),
                 store: LocalArtifactStore = Depends(store_dep)):
    return render(request, "dataset_detail.html", dataset_context(request, dataset, settings, store))


@router.post("/datasets/{dataset_id}/delete")
def delete_dataset(request: Request, dataset: Dataset = Depends(owned_dataset), db: Session = Depends(get_db),
                   settings: Settings = Depends(settings_dep), store: LocalArtifactStore = Depends(store_dep)):
    try:
        datasets.delete_dataset(db, store, dataset)
    except datasets.DatasetError as exc:
        return render(request, "dataset_detail.html", dataset_context(request, dataset, settings, store, delete_error=exc.message), status_code=exc.status)
    return redirect(request, "/")
