"""Dataset pages: upload, profile, paged and searchable preview, token lengths, personal data
masking, export, delete. The training form on the dataset page comes from app/web/jobs.py
(`train_form_context`)."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter, Depends, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.routing import APIRoute
from sqlalchemy.orm import Session

from app.base_models import get_base_model, list_base_models
from app.config import Settings, get_settings
from app.models import Dataset, User
from app.services import dataset_ingest, dataset_masking, dataset_normalise, dataset_store, dataset_tokens, label_counts, stored_rows, tabular_formats
from app.services.artifacts import LocalArtifactStore
from app.services.low_priority import run_at_low_priority
from app.services.pii import KINDS as PII_KINDS
from app.web.deps import current_user, get_db, owned_dataset, settings_dep, store_dep, verify_csrf
from app.web.jobs import train_form_context
from app.web.responses import is_htmx, redirect
from app.services.tabular_formats import neutralise_formula
from app.web.templating import render, templates

# Cells and names shown back to people: a spreadsheet must not run them as formulas.
templates.env.filters.setdefault("inert", lambda value: neutralise_formula(str(value)) if value is not None else "")

router = APIRouter(dependencies=[Depends(verify_csrf)])

# Multipart framing and the small form fields around the file.
MULTIPART_SLACK = 1024 * 1024


class UploadRoute(APIRoute):
    """An upload route that refuses a body over the upload limit before reading it (by its
    Content-Length), or as soon as the stream passes the limit, with the plain upload-limit
    message: the form with the error for pages and htmx, JSON for the API. The limit is read at
    request time, so a changed setting applies at once."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def refuse_oversized(request: Request):
            settings = get_settings()
            limit = settings.max_upload_bytes + MULTIPART_SLACK
            declared = request.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > limit:
                return _too_large_response(request, settings)
            receive = request._receive  # Starlette has no public hook to wrap a request's stream
            received = 0

            async def limited_receive():
                nonlocal received
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > limit:
                        raise HTTPException(413, dataset_ingest.upload_too_large_message(settings.max_upload_bytes))
                return message

            request._receive = limited_receive
            return await handler(request)

        return refuse_oversized


def _too_large_response(request: Request, settings: Settings):
    message = dataset_ingest.upload_too_large_message(settings.max_upload_bytes)
    headers = {"Connection": "close"}  # the client is still sending; do not keep this connection
    if request.url.path.startswith("/api/"):
        return JSONResponse({"detail": message}, status_code=413, headers=headers)
    template = "_upload_form.html" if is_htmx(request) else "dataset_new.html"
    return render(request, template, {"error": message, "max_upload": settings.max_upload_bytes}, status_code=413, headers=headers)


@router.get("/datasets/new")
def new_dataset_page(request: Request, user: User = Depends(current_user), settings: Settings = Depends(settings_dep)):
    return render(request, "dataset_new.html", {"max_upload": settings.max_upload_bytes})


def upload_dataset(request: Request, file: UploadFile = File(...), sheet: str = Form(""), user: User = Depends(current_user),
                   db: Session = Depends(get_db), settings: Settings = Depends(settings_dep), store: LocalArtifactStore = Depends(store_dep)):
    try:
        dataset, report = run_at_low_priority(dataset_ingest.ingest_upload, db, store, workspace_id=user.workspace_id, user_id=user.id, filename=file.filename or "",
                                                 source=file.file, limit_bytes=settings.max_upload_bytes, sheet=sheet)
    except dataset_store.DatasetError as exc:
        db.rollback()
        template = "_upload_form.html" if is_htmx(request) else "dataset_new.html"
        return render(request, template, {"error": exc.message, "max_upload": settings.max_upload_bytes, "sheet": sheet},
                      status_code=exc.status)
    db.commit()
    suffix = "?existing=1" if report is None else ""
    return redirect(request, f"/datasets/{dataset.id}{suffix}")


router.add_api_route("/datasets", upload_dataset, methods=["POST"], route_class_override=UploadRoute)


def ingest_notes(report: dataset_normalise.IngestReport) -> list[str]:
    return list(report.renamed_headers) + list(report.notes)


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


def dataset_context(request: Request, dataset: Dataset, settings: Settings, store: LocalArtifactStore, **extra) -> dict:
    """Everything the dataset page shows: profile, preview, personal data, plus the training form."""
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
    ctx.update(train_form_context(dataset, settings))
    ctx.update(extra)
    return ctx


@router.get("/datasets/{dataset_id}")
def dataset_page(request: Request, dataset: Dataset = Depends(owned_dataset), settings: Settings = Depends(settings_dep),
                 store: LocalArtifactStore = Depends(store_dep)):
    return render(request, "dataset_detail.html", dataset_context(request, dataset, settings, store))


@router.get("/datasets/{dataset_id}/rows")
def dataset_rows(request: Request, page: int = 1, q: str = "", dataset: Dataset = Depends(owned_dataset),
                 settings: Settings = Depends(settings_dep), store: LocalArtifactStore = Depends(store_dep)):
    """The paged, searchable preview: the partial for htmx, the whole page otherwise."""
    rows_page = stored_rows.page_rows(store, dataset, page, q[:200], settings.preview_rows)
    if is_htmx(request):
        return render(request, "_dataset_rows.html", {"dataset": dataset, "rows_page": rows_page})
    return render(request, "dataset_detail.html", dataset_context(request, dataset, settings, store, rows_page=rows_page))


@router.get("/datasets/{dataset_id}/token-lengths")
def dataset_token_lengths(request: Request, dataset: Dataset = Depends(owned_dataset), settings: Settings = Depends(settings_dep),
                          store: LocalArtifactStore = Depends(store_dep)):
    form = token_form(dataset, settings, request)
    report, error = None, None
    model = get_base_model(settings, form["token_model"]) if form["token_model"] else None
    if model is None or not model.available:
        error = "Choose an installed base model to count tokens with."
    else:
        try:
            report = run_at_low_priority(dataset_tokens.token_lengths, store, dataset, model_key=model.key, model_location=model.location,
                                            columns=form["token_columns"], max_length=form["max_length"])
        except dataset_store.DatasetError as exc:
            error = exc.message
    ctx = {"dataset": dataset, "token_report": report, "token_error": error, **form}
    if is_htmx(request):
        return render(request, "_token_lengths.html", ctx)
    return render(request, "dataset_detail.html", dataset_context(request, dataset, settings, store, **ctx))


@router.post("/datasets/{dataset_id}/personal-data")
async def mask_personal_data(request: Request, dataset: Dataset = Depends(owned_dataset), db: Session = Depends(get_db),
                             store: LocalArtifactStore = Depends(store_dep)):
    form = await request.form()
    run_at_low_priority(dataset_masking.set_pii_masking, db, store, dataset, on=form.get("mask") == "1")
    db.commit()
    return redirect(request, f"/datasets/{dataset.id}#personal-data")


@router.get("/datasets/{dataset_id}/export.csv")
def export_dataset(dataset: Dataset = Depends(owned_dataset), training_copy: bool = False, store: LocalArtifactStore = Depends(store_dep)):
    """The stored rows as CSV; cells a spreadsheet would run as formulas start with an apostrophe."""
    name = f"{dataset.name}{'-masked' if training_copy and dataset.pii_masked else ''}.csv"
    return StreamingResponse(stored_rows.export_csv_lines(store, dataset, training_copy), media_type="text/csv; charset=utf-8",
                             headers={"Content-Disposition": f"attachment; filename=\"dataset-{dataset.id}.csv\"; filename*=UTF-8''{quote(name)}"})


@router.get("/datasets/{dataset_id}/labels")
def dataset_labels(request: Request, column: str, dataset: Dataset = Depends(owned_dataset), store: LocalArtifactStore = Depends(store_dep)):
    """The label distribution of a column (a partial for the classification mapping form)."""
    distribution = label_counts.label_distribution(store, dataset, column)
    return render(request, "_label_distribution.html", {"dataset": dataset, "column": column, "labels": distribution})


@router.post("/datasets/{dataset_id}/delete")
def delete_dataset(request: Request, dataset: Dataset = Depends(owned_dataset), db: Session = Depends(get_db),
                   settings: Settings = Depends(settings_dep), store: LocalArtifactStore = Depends(store_dep)):
    try:
        dataset_ingest.delete_dataset(db, store, dataset)
    except dataset_store.DatasetError as exc:
        return render(request, "dataset_detail.html", dataset_context(request, dataset, settings, store, delete_error=exc.message), status_code=exc.status)
    return redirect(request, "/")
