"""Job pages: the training form's context, starting a job, the live job page, cancelling."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import RedirectResponse
from sqlalchemy.orm import Session

from app.base_models import DEMO_MODEL_KEY, list_base_models
from app.config import Settings
from app.models import Dataset, Job, User
from app.services import adapters, datasets, jobs
from app.services.artifacts import LocalArtifactStore
from app.techniques import CATALOGUE
from app.web.deps import current_user, get_db, owned_job, settings_dep, store_dep, verify_csrf
from app.web.responses import is_htmx, redirect
from app.web.templating import render

router = APIRouter(dependencies=[Depends(verify_csrf)])


def train_form_context(dataset: Dataset, settings: Settings, **overrides) -> dict:
    """The training form on the dataset page (templates/_train_form.html)."""
    models = list_base_models(settings)
    default_model = next((m.key for m in models if m.available), DEMO_MODEL_KEY)
    ctx = {
        "guess": datasets.guess_instruction_columns(dataset.columns),
        "techniques": list(CATALOGUE.values()),
        "base_models": models,
        "form": {"base_model": default_model, "technique": "lora", "seed": 0, "params": {}},
        "errors": {},
    }
    ctx.update(overrides)
    return ctx


def _owned_dataset_from_form(db: Session, raw_id, user: User) -> Dataset:
    try:
        dataset = db.get(Dataset, int(raw_id))
    except (TypeError, ValueError):
        dataset = None
    if dataset is None or dataset.workspace_id != user.workspace_id:
        raise HTTPException(404, "There is no such dataset in your workspace.")
    return dataset


@router.post("/jobs")
async def create_job(request: Request, user: User = Depends(current_user), db: Session = Depends(get_db),
                     settings: Settings = Depends(settings_dep), store: LocalArtifactStore = Depends(store_dep)):
    from app.web.datasets import dataset_context  # the dataset page imports this module

    form = await request.form()
    dataset = _owned_dataset_from_form(db, form.get("dataset_id"), user)
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
        ctx = dataset_context(request, dataset, settings, store, errors=exc.errors, form=form_state,
                              guess={"prompt": mapping["prompt"], "response": mapping["response"]})
        return render(request, "dataset_detail.html", ctx, status_code=422)
    db.commit()
    jobs.send_wakeup(db, job)
    return redirect(request, f"/jobs/{job.id}")


def job_context(db: Session, job: Job) -> dict:
    points = jobs.metric_points(db, job.id)
    return {
        "job": job,
        "points": [{"step": p.step, "loss": p.loss} for p in points if p.loss is not None],
        "last_point": points[-1] if points else None,
        "adapter": adapters.adapter_for_job(db, job.id),
    }


@router.get("/jobs/{job_id}")
def job_page(request: Request, job: Job = Depends(owned_job), db: Session = Depends(get_db)):
    template = "_job_status.html" if is_htmx(request) else "job_detail.html"
    return render(request, template, job_context(db, job), headers={"Vary": "HX-Request", "Cache-Control": "no-store"})


@router.post("/jobs/{job_id}/cancel")
def cancel_job(request: Request, job: Job = Depends(owned_job), db: Session = Depends(get_db)):
    jobs.request_cancel(db, job)
    db.commit()
    if is_htmx(request):
        return render(request, "_job_status.html", job_context(db, job), headers={"Vary": "HX-Request"})
    return RedirectResponse(f"/jobs/{job.id}", status_code=303)
