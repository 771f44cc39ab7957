"""HTML pages. Thin: parse the request, call a service, render a template."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter, Depends, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import FileResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from app import queue
from app.base_models import DEMO_MODEL_KEY, list_base_models
from app.config import Settings
from app.models import Adapter, Dataset, Job, User
from app.services import accounts, adapters, datasets, jobs
from app.services.artifacts import LocalArtifactStore
from app.techniques import CATALOGUE
from app.web.deps import current_user, get_db, owned_adapter, owned_dataset, owned_job, settings_dep, store_dep, verify_csrf
from app.web.templating import render

router = APIRouter(dependencies=[Depends(verify_csrf)])


def _is_htmx(request: Request) -> bool:
    return request.headers.get("HX-Request") == "true"


def _redirect(request: Request, url: str) -> Response:
    """A redirect that works for plain form posts (303) and htmx requests (HX-Redirect)."""
    if _is_htmx(request):
        return Response(status_code=204, headers={"HX-Redirect": url})
    return RedirectResponse(url, status_code=303)


# --- sign in -------------------------------------------------------------------------------

@router.get("/login")
def login_page(request: Request, next: str = "/"):
    return render(request, "login.html", {"next": next if next.startswith("/") and not next.startswith("//") else "/"})


@router.post("/login")
def login(request: Request, email: str = Form(""), password: str = Form(""), next: str = Form("/"), db: Session = Depends(get_db)):
    user = accounts.authenticate(db, email, password)
    target = next if next.startswith("/") and not next.startswith("//") else "/"
    if user is None:
        return render(request, "login.html", {"error": "That email and password do not match an account.", "email": email, "next": target}, status_code=401)
    request.session.clear()  # a fresh session (and CSRF token) at sign-in
    request.session["user_id"] = user.id
    return RedirectResponse(target, status_code=303)


@router.post("/logout")
def logout(request: Request):
    request.session.clear()
    return RedirectResponse("/login", status_code=303)


# --- dashboard -----------------------------------------------------------------------------

@router.get("/")
def dashboard(request: Request, user: User = Depends(current_user), db: Session = Depends(get_db)):
    return render(request, "dashboard.html", {
        "datasets": datasets.datasets_for(db, user.workspace_id),
        "jobs": jobs.jobs_for(db, user.workspace_id, limit=20),
        "adapters": adapters.adapters_for(db, user.workspace_id),
    })


# --- datasets ------------------------------------------------------------------------------

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
        template = "_upload_form.html" if _is_htmx(request) else "dataset_new.html"
        return render(request, template, {"error": exc.message, "max_upload": settings.max_upload_bytes}, status_code=exc.status)
    db.commit()
    if report is not None and (report.ragged_rows or report.renamed_headers):
        request.session[f"dataset-notes-{dataset.id}"] = _ingest_notes(report)
    suffix = "?existing=1" if report is None else ""
    return _redirect(request, f"/datasets/{dataset.id}{suffix}")


def _ingest_notes(report: datasets.IngestReport) -> list[str]:
    notes = list(report.renamed_headers)
    if report.ragged_rows:
        shown = ", ".join(str(n) for n in report.ragged_rows[:10])
        more = f" and {len(report.ragged_rows) - 10} more" if len(report.ragged_rows) > 10 else ""
        notes.append(f"{len(report.ragged_rows)} row(s) had a different number of cells than the header (lines {shown}{more}); missing cells were left empty and extra cells dropped.")
    return notes


def _dataset_context(request: Request, dataset: Dataset, settings: Settings, store: LocalArtifactStore, **extra) -> dict:
    techniques = list(CATALOGUE.values())
    models = list_base_models(settings)
    default_model = next((m.key for m in models if m.available), DEMO_MODEL_KEY)
    ctx = {
        "dataset": dataset,
        "preview": datasets.preview_rows(store, dataset, settings.preview_rows),
        "notes": request.session.get(f"dataset-notes-{dataset.id}", []),
        "guess": datasets.guess_instruction_columns(dataset.columns),
        "techniques": techniques,
        "base_models": models,
        "form": {"base_model": default_model, "technique": "lora", "seed": 0, "params": {}},
        "errors": {},
        "existing": request.query_params.get("existing") == "1",
    }
    ctx.update(extra)
    return ctx


@router.get("/datasets/{dataset_id}")
def dataset_page(request: Request, dataset: Dataset = Depends(owned_dataset), settings: Settings = Depends(settings_dep),
                 store: LocalArtifactStore = Depends(store_dep)):
    return render(request, "dataset_detail.html", _dataset_context(request, dataset, settings, store))


@router.post("/datasets/{dataset_id}/delete")
def delete_dataset(request: Request, dataset: Dataset = Depends(owned_dataset), db: Session = Depends(get_db),
                   settings: Settings = Depends(settings_dep), store: LocalArtifactStore = Depends(store_dep)):
    try:
        datasets.delete_dataset(db, store, dataset)
    except datasets.DatasetError as exc:
        return render(request, "dataset_detail.html", _dataset_context(request, dataset, settings, store, delete_error=exc.message), status_code=exc.status)
    return _redirect(request, "/")


# --- jobs ----------------------------------------------------------------------------------

@router.post("/jobs")
async def create_job(request: Request, user: User = Depends(current_user), db: Session = Depends(get_db),
                     settings: Settings = Depends(settings_dep), store: LocalArtifactStore = Depends(store_dep)):
    form = await request.form()
    dataset = _owned(db, Dataset, form.get("dataset_id"), user)
    technique = str(form.get("technique") or "lora")
    entry = CATALOGUE.get(technique)
    params = {p.name: form.get(f"param_{p.name}") for p in entry.all_params} if entry else {}
    params = {k: v for k, v in params.items() if v not in (None, "")}
    mapping = {"prompt": str(form.get("prompt_column") or ""), "response": str(form.get("response_column") or "")}
    seed_raw = str(form.get("seed") or "0")
    try:
        seed = int(seed_raw)
    except ValueError:
        seed = -1
    try:
        job = jobs.submit_job(db, settings, store, workspace_id=user.workspace_id, user_id=user.id, dataset=dataset, task="instruction",
                              column_mapping=mapping, base_model=str(form.get("base_model") or ""), technique=technique,
                              params=params, seed=seed, name=str(form.get("name") or "") or None)
    except jobs.JobError as exc:
        db.rollback()
        form_state = {"base_model": form.get("base_model"), "technique": technique, "seed": seed_raw, "params": params}
        ctx = _dataset_context(request, dataset, settings, store, errors=exc.errors, form=form_state,
                               guess={"prompt": mapping["prompt"], "response": mapping["response"]})
        return render(request, "dataset_detail.html", ctx, status_code=422)
    db.commit()
    _send_wakeup(db, job)
    return _redirect(request, f"/jobs/{job.id}")


def _send_wakeup(db: Session, job: Job) -> None:
    """Send the job's wake-up. If the broker is down the job stays queued and the reconciler
    sends it later: the committed row, not the message, is what counts."""
    try:
        queue.send_train(job.id, job.queue)
    except Exception:  # noqa: BLE001 - any broker failure leaves a queued row for the reconciler
        return
    jobs.mark_enqueued(db, job.id)
    db.commit()


def _owned(db: Session, model, raw_id, user: User):
    try:
        row = db.get(model, int(raw_id))
    except (TypeError, ValueError):
        row = None
    if row is None or row.workspace_id != user.workspace_id:
        raise HTTPException(404, f"There is no such {model.__tablename__[:-1]} in your workspace.")
    return row


def _job_context(db: Session, job: Job) -> dict:
    points = jobs.metric_points(db, job.id)
    return {
        "job": job,
        "points": [{"step": p.step, "loss": p.loss} for p in points if p.loss is not None],
        "last_point": points[-1] if points else None,
        "adapter": adapters.adapter_for_job(db, job.id),
    }


@router.get("/jobs/{job_id}")
def job_page(request: Request, job: Job = Depends(owned_job), db: Session = Depends(get_db)):
    template = "_job_status.html" if _is_htmx(request) else "job_detail.html"
    return render(request, template, _job_context(db, job), headers={"Vary": "HX-Request", "Cache-Control": "no-store"})


@router.post("/jobs/{job_id}/cancel")
def cancel_job(request: Request, job: Job = Depends(owned_job), db: Session = Depends(get_db)):
    jobs.request_cancel(db, job)
    db.commit()
    if _is_htmx(request):
        return render(request, "_job_status.html", _job_context(db, job), headers={"Vary": "HX-Request"})
    return RedirectResponse(f"/jobs/{job.id}", status_code=303)


# --- adapters ------------------------------------------------------------------------------

@router.get("/adapters")
def adapters_page(request: Request, user: User = Depends(current_user), db: Session = Depends(get_db)):
    return render(request, "adapters.html", {"adapters": adapters.adapters_for(db, user.workspace_id)})


@router.get("/adapters/{adapter_id}/download")
def download_adapter(adapter: Adapter = Depends(owned_adapter), store: LocalArtifactStore = Depends(store_dep)):
    return adapter_zip_response(adapter, store)


def adapter_zip_response(adapter: Adapter, store: LocalArtifactStore) -> Response:
    path = adapters.adapter_zip_path(store, adapter)
    if not path.is_file():
        raise HTTPException(404, "This adapter's files are missing from the artifact store.")
    name = adapters.download_filename(adapter)
    return FileResponse(path, media_type="application/zip", filename=name,
                        headers={"Content-Disposition": f"attachment; filename=\"{name}\"; filename*=UTF-8''{quote(name)}"})
