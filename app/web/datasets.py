"""Dataset pages: upload, profile, paged and searchable preview, token lengths, personal data
masking, export, delete. The training form on the dataset page comes from app/web/train_form.py."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import StreamingResponse

from app.base_models import get_base_model, list_base_models
from app.config import Settings
from app.domain.task_kinds import TASK_KINDS
from app.http import auditing
from app.http.deps import AppSettings, Csrf, CurrentUser, DbSession, OwnedDataset, Store
from app.http.responses import is_htmx, redirect
from app.http.upload import UploadRoute
from app.models import Dataset
from app.services import dataset_ingest, dataset_masking, dataset_store, dataset_tokens, label_counts, stored_rows, tabular_formats
from app.services.artifacts import ArtifactStore
from app.services.low_priority import run_at_low_priority
from app.services.pii import KINDS as PII_KINDS
from app.web.templating import render
from app.web.train_form import train_form_context

router = APIRouter(dependencies=[Csrf])


class PageUploadRoute(UploadRoute):
    """The upload route of the pages: an upload over the limit gets the form back with the message."""

    @classmethod
    def too_large_response(cls, request: Request, message: str, max_upload: int, headers: dict[str, str]):
        template = "_upload_form.html" if is_htmx(request) else "dataset_new.html"
        return render(request, template, {"error": message, "max_upload": max_upload}, status_code=413, headers=headers)


@router.get("/datasets/new")
def new_dataset_page(request: Request, user: CurrentUser, settings: AppSettings):
    return render(request, "dataset_new.html", {"max_upload": settings.max_upload_bytes})


def upload_dataset(
    request: Request,
    user: CurrentUser,
    db: DbSession,
    settings: AppSettings,
    store: Store,
    file: UploadFile = File(...),
    sheet: str = Form(""),
):
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
        template = "_upload_form.html" if is_htmx(request) else "dataset_new.html"
        return render(
            request, template, {"error": exc.message, "max_upload": settings.max_upload_bytes, "sheet": sheet}, status_code=exc.status
        )
    auditing.record(request, db, user, "dataset_uploaded", ("dataset", dataset.id), {"filename": file.filename, "existing": report is None})
    suffix = "?existing=1" if report is None else ""
    return redirect(request, f"/datasets/{dataset.id}{suffix}")


router.add_api_route("/datasets", upload_dataset, methods=["POST"], route_class_override=PageUploadRoute)


def token_form(dataset: Dataset, settings: Settings, request: Request) -> dict:
    """The token-length form's state: models with a tokenizer, chosen columns and max length."""
    models = [m for m in list_base_models(settings) if m.available and dataset_tokens.tokenizer_file_for(m.location)]
    profile_columns = {c["name"]: c for c in (dataset.profile or {}).get("columns", [])}
    text_columns = [c for c in dataset.columns if profile_columns.get(c, {}).get("type", "text") == "text"] or dataset.columns[:1]
    chosen = request.query_params.getlist("columns") or text_columns
    return {
        "token_models": models,
        "token_model": request.query_params.get("base_model") or (models[0].key if models else ""),
        "token_columns": [c for c in chosen if c in dataset.columns],
        "max_length": _int(request.query_params.get("max_length"), 512),
    }


def _int(raw, default: int) -> int:
    try:
        return int(raw)
    except (TypeError, ValueError):
        return default


def dataset_context(
    request: Request, dataset: Dataset, settings: Settings, store: ArtifactStore, *, train_form: dict | None = None, **extra
) -> dict:
    """Everything the dataset page shows: profile, preview, personal data, plus the training form
    (`train_form`: its context when the caller built it already, e.g. a submitted form with errors)."""
    ctx = {
        "dataset": dataset,
        "profile": dataset.profile,
        "preview": stored_rows.preview_rows(store, dataset, settings.preview_rows),
        "rows_page": stored_rows.page_rows(store, dataset, 1, "", settings.preview_rows),
        "notes": dataset.ingest_notes or request.session.get(f"dataset-notes-{dataset.id}", []),
        "existing": request.query_params.get("existing") == "1",
        "delimiter_name": tabular_formats.DELIMITER_NAMES.get(dataset.delimiter, dataset.delimiter),
        "pii_kinds": PII_KINDS,
        "token_report": None,
        "token_error": None,
    }
    ctx.update(token_form(dataset, settings, request))
    ctx.update(train_form if train_form is not None else train_form_context(dataset, settings))
    ctx.update(extra)
    return ctx


@router.get("/datasets/{dataset_id}")
def dataset_page(request: Request, dataset: OwnedDataset, settings: AppSettings, store: Store, task: str = ""):
    # ?task=preference: the form opens on that task (a dataset just built from review votes)
    form = train_form_context(dataset, settings, form={"task": task}) if task in TASK_KINDS else None
    return render(request, "dataset_detail.html", dataset_context(request, dataset, settings, store, train_form=form))


@router.get("/datasets/{dataset_id}/rows")
def dataset_rows(request: Request, dataset: OwnedDataset, settings: AppSettings, store: Store, page: int = 1, q: str = ""):
    """The paged, searchable preview: the partial for htmx, the whole page otherwise."""
    rows_page = stored_rows.page_rows(store, dataset, page, q[:200], settings.preview_rows)
    if is_htmx(request):
        return render(request, "_dataset_rows.html", {"dataset": dataset, "rows_page": rows_page})
    return render(request, "dataset_detail.html", dataset_context(request, dataset, settings, store, rows_page=rows_page))


@router.get("/datasets/{dataset_id}/token-lengths")
def dataset_token_lengths(request: Request, dataset: OwnedDataset, settings: AppSettings, store: Store):
    form = token_form(dataset, settings, request)
    report, error = None, None
    model = get_base_model(settings, form["token_model"]) if form["token_model"] else None
    if model is None or not model.available:
        error = "Choose an installed base model to count tokens with."
    else:
        try:
            report = run_at_low_priority(
                dataset_tokens.token_lengths,
                store,
                dataset,
                model_key=model.key,
                model_location=model.location,
                columns=form["token_columns"],
                max_length=form["max_length"],
            )
        except dataset_store.DatasetError as exc:
            error = exc.message
    found = {"token_report": report, "token_error": error, **form}
    if is_htmx(request):
        return render(request, "_token_lengths.html", {"dataset": dataset, **found})
    return render(request, "dataset_detail.html", dataset_context(request, dataset, settings, store, **found))


@router.post("/datasets/{dataset_id}/personal-data")
async def mask_personal_data(request: Request, dataset: OwnedDataset, db: DbSession, store: Store):
    form = await request.form()
    run_at_low_priority(dataset_masking.set_pii_masking, db, store, dataset, on=form.get("mask") == "1")
    return redirect(request, f"/datasets/{dataset.id}#personal-data")


@router.get("/datasets/{dataset_id}/export.csv")
def export_dataset(request: Request, dataset: OwnedDataset, user: CurrentUser, db: DbSession, store: Store, training_copy: bool = False):
    """The stored rows as CSV; cells a spreadsheet would run as formulas start with an apostrophe."""
    auditing.record(request, db, user, "dataset_downloaded", ("dataset", dataset.id), {"training_copy": training_copy})
    name = f"{dataset.name}{'-masked' if training_copy and dataset.pii_masked else ''}.csv"
    return StreamingResponse(
        stored_rows.export_csv_lines(store, dataset, training_copy),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f"attachment; filename=\"dataset-{dataset.id}.csv\"; filename*=UTF-8''{quote(name)}"},
    )


@router.get("/datasets/{dataset_id}/labels")
def dataset_labels(request: Request, column: str, dataset: OwnedDataset, store: Store):
    """The label distribution of a column (a partial for the classification mapping form)."""
    distribution = label_counts.label_distribution(store, dataset, column)
    return render(request, "_label_distribution.html", {"dataset": dataset, "column": column, "labels": distribution})


@router.post("/datasets/{dataset_id}/delete")
def delete_dataset(request: Request, dataset: OwnedDataset, user: CurrentUser, db: DbSession, settings: AppSettings, store: Store):
    target, name = ("dataset", dataset.id), dataset.name
    try:
        dataset_ingest.delete_dataset(db, store, dataset)
    except dataset_store.DatasetError as exc:
        return render(
            request,
            "dataset_detail.html",
            dataset_context(request, dataset, settings, store, delete_error=exc.message),
            status_code=exc.status,
        )
    auditing.record(request, db, user, "dataset_deleted", target, {"name": name})
    return redirect(request, "/")
