"""Job pages: the training form's context, starting a job, the live job page, cancelling."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse
from starlette.concurrency import run_in_threadpool
from sqlalchemy.orm import Session, object_session

from app.base_models import DEMO_MODEL_KEY, list_base_models
from app.config import Settings
from app.models import Dataset, Job, User
from app.services import adapters, attempts, bakeoff, datasets, job_estimates, jobs, row_preview, task_rows
from app.services.artifacts import LocalArtifactStore
from app.domain.estimates import WorkerClass, read_model_config
from app.domain.task_kinds import TASK_KINDS, task_labels
from app.domain.techniques import (
    CATALOGUE,
    PRESETS,
    ParameterError,
    preset_params,
    tasks_for_model,
    unavailable_reason,
    validate_params,
)
from app.web.deps import current_user, dataset_in_workspace, get_db, owned_job, settings_dep, store_dep, verify_csrf
from app.web.responses import is_htmx, redirect
from app.web.templating import render

router = APIRouter(dependencies=[Depends(verify_csrf)])


def model_availability(models, techniques, worker_has_cuda: bool | None = None) -> dict:
    """Per base model: its tasks and, per task, why each technique cannot run (absent = it can).

    Decided from config.json and the catalogue only; the form disables options with the reason.
    """
    table = {}
    for model in models:
        config = read_model_config(model.location) if model.available else None
        tasks = list(tasks_for_model(config))
        reasons = {}
        for task in TASK_KINDS:
            reasons[task] = {t.key: reason for t in techniques
                             if (reason := unavailable_reason(t, task, config, worker_has_cuda))}
        table[model.key] = {"tasks": tasks, "reasons": reasons, "config": config}
    return table


def form_estimate(dataset: Dataset, settings: Settings, *, base_model: str, technique: str, task: str,
                  mapping: dict, params: dict, worker: WorkerClass | None = None, validation_rows: int | None = None) -> dict:
    """The pre-launch estimate shown on the form ({"error": ...} when it cannot be made)."""
    model = next((m for m in list_base_models(settings) if m.key == base_model), None)
    config = read_model_config(model.location) if model is not None and model.available else None
    entry = CATALOGUE.get(technique)
    if entry is None:
        return {"error": "Choose a technique to see an estimate."}
    try:
        clean = validate_params(entry, params)
    except ParameterError as exc:
        return {"error": "Fix the settings to see an estimate: " + str(exc)}
    return job_estimates.estimate_for(dataset, config, technique, clean, task, mapping, worker, validation_rows=validation_rows)


def train_form_context(dataset: Dataset, settings: Settings, **overrides) -> dict:
    """The training form on the dataset page (templates/_train_form.html)."""
    models = list_base_models(settings)
    default_model = next((m.key for m in models if m.available), DEMO_MODEL_KEY)
    techniques = list(CATALOGUE.values())
    worker = _live_worker_class()
    availability = model_availability(models, techniques, worker.kind == "cuda" if worker else None)
    guesses = {task: datasets.guess_columns(task, list(dataset.columns)) for task in TASK_KINDS}
    n_rows = int(dataset.row_count or 0)
    presets = {t.key: {task: {name: preset_params(t, task, n_rows, name) for name in PRESETS} for task in t.task_kinds}
               for t in techniques}
    form = {"base_model": default_model, "technique": "lora", "task": "instruction", "seed": 0, "params": {},
            "preset": "balanced", "validation_dataset_id": ""}
    form.update(overrides.pop("form", {}) or {})
    if "guess" in overrides:  # a re-rendered form keeps the columns the user chose
        chosen = overrides.pop("guess")
        guesses[form.get("task", "instruction")] = {**guesses.get(form.get("task", "instruction"), {}), **chosen}
    model_info = availability.get(form["base_model"]) or {"tasks": list(TASK_KINDS), "reasons": {}}
    task = form["task"] if form["task"] in TASK_KINDS else "instruction"
    ctx = {
        "guess": guesses.get("instruction", {}),
        "guesses": guesses,
        "tasks": task_labels(),
        "techniques": techniques,
        "base_models": models,
        "availability": {key: {"tasks": v["tasks"], "reasons": v["reasons"]} for key, v in availability.items()},
        "reasons": model_info["reasons"].get(task, {}),
        "presets": presets,
        "preset_names": PRESETS,
        "form": form,
        "validation_datasets": validation_choices(dataset),
        "errors": {},
        "estimate": form_estimate(dataset, settings, base_model=form["base_model"], technique=form["technique"], task=task,
                                  mapping=_mapping_from_guess(task, guesses.get(task, {})), params=form.get("params") or {},
                                  worker=worker),
    }
    ctx.update(overrides)
    return ctx


def validation_choices(dataset: Dataset) -> list[dict]:
    """The workspace's other datasets that could serve as a validation file, those sharing the
    most columns with this one first (the job's checks name any mapped column a file lacks)."""
    db = object_session(dataset)
    if db is None:
        return []
    columns = set(dataset.columns)
    choices = [{"id": d.id, "name": d.name, "rows": int(d.row_count or 0), "shared": len(columns & set(d.columns)),
                "missing": [c for c in dataset.columns if c not in d.columns]}
               for d in datasets.datasets_for(db, dataset.workspace_id) if d.id != dataset.id]
    choices = [c for c in choices if c["shared"]]
    choices.sort(key=lambda c: (c["missing"] != [], -c["shared"], -c["id"]))
    return choices


def _live_worker_class() -> WorkerClass | None:
    """The class of worker that would take a job now, from the workers' own reports (None if none reported)."""
    from app.db import session_scope

    try:
        with session_scope() as db:
            return job_estimates.preferred_worker(db)
    except Exception:  # noqa: BLE001 - the form still works without the worker board
        return None


def _mapping_from_guess(task: str, guess: dict) -> dict:
    return {k: v for k, v in guess.items() if v}


def mapping_from_form(form, task: str) -> dict:
    """The column mapping of the chosen task from the form's fields."""
    if task == "text":
        return {"text_columns": [str(c) for c in form.getlist("text_columns") if c]}
    if task == "classification":
        return {"text": str(form.get("class_text_column") or ""), "label": str(form.get("label_column") or "")}
    mapping = {"prompt": str(form.get("prompt_column") or ""), "response": str(form.get("response_column") or "")}
    for role in ("system", "context"):
        if form.get(f"{role}_column"):
            mapping[role] = str(form.get(f"{role}_column"))
    return mapping


def _choices_from_form(form) -> tuple[str, str, dict]:
    """(technique, task, the technique's parameters the person filled in) from the training form."""
    technique = str(form.get("technique") or "lora")
    task = str(form.get("task") or "instruction")
    entry = CATALOGUE.get(technique)
    params = {p.name: form.get(f"param_{p.name}") for p in entry.all_params} if entry else {}
    return technique, task, {k: v for k, v in params.items() if v not in (None, "")}


def _datasets_from_form(db: Session, form, user: User) -> tuple[Dataset, Dataset | None]:
    """The form's training dataset and optional validation file, both of the user's workspace (404 otherwise)."""
    validation_id = str(form.get("validation_dataset_id") or "")
    return (dataset_in_workspace(db, form.get("dataset_id"), user),
            dataset_in_workspace(db, validation_id, user) if validation_id else None)


@router.post("/jobs")
async def create_job(request: Request, user: User = Depends(current_user), db: Session = Depends(get_db),
                     settings: Settings = Depends(settings_dep), store: LocalArtifactStore = Depends(store_dep)):
    from app.web.datasets import dataset_context  # the dataset page imports this module

    form = await request.form()
    dataset, validation = _datasets_from_form(db, form, user)
    technique, task, params = _choices_from_form(form)
    mapping = mapping_from_form(form, task)
    seed_raw = str(form.get("seed") or "0")
    try:
        seed = int(seed_raw)
    except ValueError:
        seed = -1
    bakeoff_techniques = [str(t) for t in form.getlist("bakeoff_techniques")]
    try:
        if bakeoff_techniques:
            group_id, created = bakeoff.submit_bakeoff(
                db, settings, store, workspace_id=user.workspace_id, user_id=user.id, dataset=dataset, task=task, column_mapping=mapping,
                base_model=str(form.get("base_model") or ""), techniques=[technique, *bakeoff_techniques], params=params, seed=seed,
                preset=str(form.get("preset") or "") or None, validation_dataset=validation)
            db.commit()
            for job in created:
                jobs.send_wakeup(db, job)
            return redirect(request, f"/groups/{group_id}")
        job = jobs.submit_job(db, settings, store, workspace_id=user.workspace_id, user_id=user.id, dataset=dataset, task=task,
                              column_mapping=mapping, base_model=str(form.get("base_model") or ""), technique=technique,
                              params=params, seed=seed, name=str(form.get("name") or "") or None, validation_dataset=validation)
    except jobs.JobError as exc:
        db.rollback()
        form_state = {"base_model": form.get("base_model"), "technique": technique, "task": task, "seed": seed_raw,
                      "params": params, "preset": str(form.get("preset") or ""), "validation_dataset_id": str(validation.id) if validation else ""}
        ctx = dataset_context(request, dataset, settings, store)
        ctx.update(train_form_context(dataset, settings, form=form_state, guess=mapping))
        ctx["errors"] = exc.errors
        return render(request, "dataset_detail.html", ctx, status_code=422)
    db.commit()
    jobs.send_wakeup(db, job)
    return redirect(request, f"/jobs/{job.id}")


@router.post("/jobs/estimate")
async def estimate_partial(request: Request, user: User = Depends(current_user), db: Session = Depends(get_db),
                           settings: Settings = Depends(settings_dep)):
    """The form's estimate, re-computed as the user changes model, technique, task or settings (htmx)."""
    form = await request.form()
    dataset, validation = _datasets_from_form(db, form, user)
    technique, task, params = _choices_from_form(form)
    estimate = form_estimate(dataset, settings, base_model=str(form.get("base_model") or ""), technique=technique, task=task,
                             mapping=mapping_from_form(form, task), params=params, worker=job_estimates.preferred_worker(db),
                             validation_rows=int(validation.row_count or 0) if validation is not None else None)
    return render(request, "_train_estimate.html", {"estimate": estimate}, headers={"Vary": "HX-Request"})


def max_length_of(technique: str, params: dict) -> int:
    """The maximum length the job would train with: the form's value, else the catalogue default."""
    entry = CATALOGUE.get(technique) or CATALOGUE["lora"]
    default = next((p.default for p in entry.all_params if p.name == "max_length"), 256)
    try:
        return int(params.get("max_length") or default)
    except (TypeError, ValueError):
        return int(default)


def preview_context(settings: Settings, store: LocalArtifactStore, dataset: Dataset, *, task: str, mapping: dict, base_model: str,
                    max_length: int, validation_dataset: Dataset | None = None) -> dict:
    """The preview partial's context: three rows as the model sees them, or why they cannot be shown."""
    from app.services.prompt_preview import PreviewError

    try:
        examples = row_preview.preview_examples(settings, store, dataset, task=task, mapping=mapping, base_model=base_model,
                                         max_length=max_length, validation_dataset=validation_dataset)
    except PreviewError as exc:
        return {"examples": [], "preview_error": str(exc), "max_length": max_length}
    return {"examples": examples, "preview_error": None, "max_length": max_length}


@router.post("/jobs/preview")
async def preview_partial(request: Request, user: User = Depends(current_user), db: Session = Depends(get_db),
                          settings: Settings = Depends(settings_dep), store: LocalArtifactStore = Depends(store_dep)):
    """Three rows exactly as the model will see them, for the chosen task, columns, model and length (htmx)."""
    form = await request.form()
    dataset, validation = _datasets_from_form(db, form, user)
    technique, task, params = _choices_from_form(form)
    # Reading rows and tokenizing is blocking work: off the event loop.
    ctx = await run_in_threadpool(lambda: preview_context(
        settings, store, dataset, task=task, mapping=mapping_from_form(form, task), base_model=str(form.get("base_model") or ""),
        max_length=max_length_of(technique, params), validation_dataset=validation))
    return render(request, "_train_preview.html", ctx, headers={"Vary": "HX-Request"})


def estimate_vs_actual(job: Job, adapter) -> list[dict]:
    """Rows of (what, estimated, actual, error) for the finished job's page."""
    estimate = (job.result or {}).get("estimate") or {}
    result = job.result or {}
    if not estimate or "error" in estimate:
        return []
    rows = [
        ("Peak memory", estimate.get("peak_memory_bytes"), result.get("peak_memory_bytes"), "bytes"),
        ("Time (load, train, evaluate)", estimate.get("seconds"),
         (job.finished_at - job.started_at).total_seconds() if job.finished_at and job.started_at else result.get("train_seconds"),
         "seconds"),
        ("Trainable parameters", estimate.get("trainable_parameters"), result.get("trainable_parameters"), "count"),
        ("Adapter size", estimate.get("adapter_bytes"), adapter.size_bytes if adapter else None, "bytes"),
    ]
    table = []
    for label, guessed, actual, unit in rows:
        error = (guessed - actual) / actual if guessed is not None and actual else None
        table.append({"label": label, "estimate": guessed, "actual": actual, "unit": unit, "error": error})
    return table


def job_context(db: Session, job: Job) -> dict:
    points = jobs.metric_points(db, job.id)
    adapter = adapters.adapter_for_job(db, job.id)
    return {
        "job": job,
        "points": [{"step": p.step, "loss": p.loss, "validation_loss": p.validation_loss} for p in points
                   if p.loss is not None or p.validation_loss is not None],
        "last_point": points[-1] if points else None,
        "adapter": adapter,
        "estimate_rows": estimate_vs_actual(job, adapter) if job.is_finished else [],
        "validation": (job.result or {}).get("validation"),
        "validation_text": task_rows.describe_validation((job.result or {}).get("validation")),
        "attempts": attempts.attempts_for(db, job.id),
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
