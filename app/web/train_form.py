"""The training form on the dataset page (templates/_train_form.html): its context (base models,
techniques and what each can do, presets, column guesses, validation files, the estimate) and
reading the submitted form. Used by the dataset page and by the job routes that answer the form."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session, object_session

from app.base_models import DEMO_MODEL_KEY, list_base_models
from app.config import Settings
from app.domain.estimates import WorkerClass, read_model_config
from app.domain.layouts import RAY_HELP, LayoutError
from app.domain.task_kinds import DEFAULT_TASK, PREFERENCE_TECHNIQUES, TASK_KEYS, TASK_KINDS, UnknownTaskKind, get_task_kind, task_labels
from app.domain.techniques import (
    CATALOGUE,
    PRESETS,
    ParameterError,
    preset_params,
    tasks_for_model,
    unavailable_reason,
    validate_params,
)
from app.http.lookups import dataset_in_workspace
from app.models import Dataset, User
from app.services import adapters, column_guess, dataset_ingest, job_estimates, job_layouts


def model_availability(models, techniques, worker_has_cuda: bool | None = None) -> dict:
    """Per base model: its tasks and, per task, why each technique cannot run (absent = it can).

    Decided from config.json and the catalogue only; the form disables options with the reason.
    """
    table = {}
    for model in models:
        config = read_model_config(model.location) if model.available else None
        tasks = list(tasks_for_model(config))
        reasons = {}
        for task in TASK_KEYS:
            reasons[task] = {t.key: reason for t in techniques if (reason := unavailable_reason(t, task, config, worker_has_cuda))}
        table[model.key] = {"tasks": tasks, "reasons": reasons, "config": config}
    return table


def form_estimate(
    dataset: Dataset,
    settings: Settings,
    *,
    base_model: str,
    technique: str,
    task: str,
    mapping: dict,
    params: dict,
    worker: WorkerClass | None = None,
    validation_rows: int | None = None,
    devices: str = "1",
    strategy: str = "auto",
    cpu_offload: bool = False,
    seed: int = 0,
    validation_dataset_id: int | None = None,
) -> dict:
    """The pre-launch estimate shown on the form ({"error": ...} when it cannot be made; with
    "invalid": True when the submitted settings are at fault); with more than one device also the
    layout: strategy and reason, memory per device, time."""
    model = next((m for m in list_base_models(settings) if m.key == base_model), None)
    config = read_model_config(model.location) if model is not None and model.available else None
    entry = CATALOGUE.get(technique)
    if entry is None:
        return {"error": "Choose a technique to see an estimate."}
    try:
        clean = validate_params(entry, params)
    except ParameterError as exc:
        return {"error": "Fix the settings to see an estimate: " + str(exc), "invalid": True}
    estimate = job_estimates.estimate_for(
        dataset,
        config,
        technique,
        clean,
        task,
        mapping,
        worker,
        validation_rows=validation_rows,
        base_model=base_model,
        seed=seed,
        validation_dataset_id=validation_dataset_id,
    )
    if devices != "1" and "error" not in estimate:
        try:
            plan = job_layouts.plan_for(
                object_session(dataset),
                settings,
                dataset,
                config,
                technique,
                clean,
                task,
                mapping,
                devices=devices,
                strategy=strategy,
                cpu_offload=cpu_offload,
            )
            estimate["layout"] = plan.as_dict()
        except LayoutError as exc:
            estimate["layout_error"] = str(exc)
    return estimate


def seed_from_form(form: Any) -> int | None:
    """The seed field as a number; None when it is not a whole number (the job service names the error)."""
    try:
        return int(str(form.get("seed") or "0"))
    except ValueError:
        return None


def devices_from_form(form: Any) -> tuple[str, str, bool]:
    """(devices as the job service reads them: "1", "all" or "KxM", strategy, CPU offload) from the Devices fieldset."""
    mode = str(form.get("devices_mode") or "one")
    if mode == "all":
        devices = "all"
    elif mode == "machines":
        devices = f"{str(form.get('machines') or '').strip() or '?'}x{str(form.get('per_machine') or '').strip() or '?'}"
    else:
        devices = "1"
    return devices, str(form.get("strategy") or "auto"), str(form.get("cpu_offload") or "") == "on"


def devices_form_state(form: Any) -> dict:
    """The Devices fieldset's values, to re-render a refused form as it was sent."""
    return {key: str(form.get(key) or "") for key in ("devices_mode", "machines", "per_machine", "strategy", "cpu_offload")}


def train_form_context(dataset: Dataset, settings: Settings, **overrides) -> dict:
    """The training form's context. `form` (the chosen values) and `guess` (the chosen columns)
    re-render a submitted form; any other key overrides the context (e.g. `errors`)."""
    models = list_base_models(settings)
    default_model = next((m.key for m in models if m.available), DEMO_MODEL_KEY)
    techniques = list(CATALOGUE.values())
    worker = _live_worker_class()
    availability = model_availability(models, techniques, worker.kind == "cuda" if worker else None)
    guesses = {task: column_guess.guess_columns(task, list(dataset.columns)) for task in TASK_KEYS}
    n_rows = int(dataset.row_count or 0)
    paces = _paces(dataset, settings, default_model, worker, guesses)
    presets = {
        t.key: {task: {name: preset_params(t, task, n_rows, name, paces.get((t.key, task))) for name in PRESETS} for task in t.task_kinds}
        for t in techniques
    }
    form: dict[str, Any] = {  # the chosen values, as submitted (strings, numbers, the params dict)
        "base_model": default_model,
        "technique": "lora",
        "task": DEFAULT_TASK,
        "seed": 0,
        "params": {},
        "preset": "balanced",
        "validation_dataset_id": "",
        "devices_mode": "one",
    }
    form.update(overrides.pop("form", {}) or {})
    if "guess" in overrides:  # a re-rendered form keeps the columns the user chose
        chosen = overrides.pop("guess")
        guesses[form.get("task", DEFAULT_TASK)] = {**guesses.get(form.get("task", DEFAULT_TASK), {}), **chosen}
    model_info = availability.get(form["base_model"]) or {"tasks": list(TASK_KEYS), "reasons": {}}
    task = form["task"] if form["task"] in TASK_KINDS else DEFAULT_TASK
    ctx = {
        "guess": guesses.get(DEFAULT_TASK, {}),
        "guesses": guesses,
        "tasks": task_labels(),
        "task_kinds": list(TASK_KINDS.values()),
        "techniques": techniques,
        "base_models": models,
        "availability": {key: {"tasks": v["tasks"], "reasons": v["reasons"]} for key, v in availability.items()},
        "reasons": model_info["reasons"].get(task, {}),
        "presets": presets,
        "preset_names": PRESETS,
        "form": form,
        "validation_datasets": validation_choices(dataset),
        "parent_choices": parent_choices(dataset),  # preference tuning: adapters a job may continue from
        "ray_configured": bool(settings.ray_address),
        "ray_help": RAY_HELP,
        "errors": {},
        "estimate": form_estimate(
            dataset,
            settings,
            base_model=form["base_model"],
            technique=form["technique"],
            task=task,
            mapping=_mapping_from_guess(guesses.get(task, {})),
            params=form.get("params") or _preset_values(presets, form, task),
            worker=worker,
        ),
    }
    ctx.update(overrides)
    return ctx


def parent_choices(dataset: Dataset) -> list[dict]:
    """The workspace's adapters that preference tuning can continue (the LoRA family, not archived), newest first."""
    db = object_session(dataset)
    if db is None:
        return []
    return [
        {"id": a.id, "name": a.name, "technique": a.technique, "base_model": a.base_model}
        for a in adapters.adapters_for(db, dataset.workspace_id)
        if a.technique in PREFERENCE_TECHNIQUES and a.status != "archived"
    ]


def validation_choices(dataset: Dataset) -> list[dict]:
    """The workspace's other datasets that could serve as a validation file, those sharing the
    most columns with this one first (the job's checks name any mapped column a file lacks)."""
    db = object_session(dataset)
    if db is None:
        return []
    columns = set(dataset.columns)
    choices: list[dict[str, Any]] = [
        {
            "id": d.id,
            "name": d.name,
            "rows": int(d.row_count or 0),
            "shared": len(columns & set(d.columns)),
            "missing": [c for c in dataset.columns if c not in d.columns],
        }
        for d in dataset_ingest.datasets_for(db, dataset.workspace_id)
        if d.id != dataset.id
    ]
    choices = [c for c in choices if c["shared"]]
    choices.sort(key=lambda c: (c["missing"] != [], -c["shared"], -c["id"]))
    return choices


def _paces(dataset: Dataset, settings: Settings, base_model: str, worker: WorkerClass | None, guesses: dict) -> dict:
    """(technique, task) -> the WorkerPace of the worker that would take the job (its calibrated or
    measured speed), for the presets; empty without a live worker."""
    if worker is None:
        return {}
    model = next((m for m in list_base_models(settings) if m.key == base_model), None)
    config = read_model_config(model.location) if model is not None and model.available else None
    mappings = {task: _mapping_from_guess(guesses.get(task, {})) for task in TASK_KEYS}
    reused = {  # one lookup per task, not per technique and epoch count
        task: job_estimates.base_answers_reused(dataset, base_model, task, mapping, worker.kind) for task, mapping in mappings.items()
    }
    paces = {
        (technique.key, task): job_estimates.pace_for(
            dataset, config, technique.key, task, mappings[task], worker, base_model, base_cached=reused[task]
        )
        for technique in CATALOGUE.values()
        for task in technique.task_kinds
    }
    return {key: pace for key, pace in paces.items() if pace is not None}


def _live_worker_class() -> WorkerClass | None:
    """The class of worker that would take a job now, from the workers' own reports (None if none reported)."""
    from app.db import session_scope

    try:
        with session_scope() as db:
            return job_estimates.preferred_worker(db)
    except Exception:  # noqa: BLE001 - the form still works without the worker board
        return None


def _preset_values(presets: dict, form: dict, task: str) -> dict:
    """The preselected preset's values for the chosen technique and task: what the page's script
    fills in on load (static/app.js applyPreset), so the estimate shown first is for them."""
    return dict(((presets.get(form.get("technique")) or {}).get(task) or {}).get(form.get("preset") or "") or {})


def _mapping_from_guess(guess: dict) -> dict:
    return {k: v for k, v in guess.items() if v}


def mapping_from_form(form: Any, task: str) -> dict:
    """The column mapping of the chosen task from the form's fields (the registry names them);
    empty for an unknown task, which the job's checks then refuse with a message."""
    try:
        return get_task_kind(task).mapping_from_form(form)
    except UnknownTaskKind:
        return {}


def choices_from_form(form: Any) -> tuple[str, str, dict]:
    """(technique, task, the technique's parameters the person filled in) from the training form."""
    technique = str(form.get("technique") or "lora")
    task = str(form.get("task") or DEFAULT_TASK)
    entry = CATALOGUE.get(technique)
    params = {p.name: form.get(f"param_{p.name}") for p in entry.all_params} if entry else {}
    return technique, task, {k: v for k, v in params.items() if v not in (None, "")}


def datasets_from_form(db: Session, form: Any, user: User) -> tuple[Dataset, Dataset | None]:
    """The form's training dataset and optional validation file, both of the user's workspace (404 otherwise)."""
    validation_id = str(form.get("validation_dataset_id") or "")
    return (
        dataset_in_workspace(db, form.get("dataset_id"), user),
        dataset_in_workspace(db, validation_id, user) if validation_id else None,
    )


def max_length_of(technique: str, params: dict) -> int:
    """The maximum length the job would train with: the form's value, else the catalogue default."""
    entry = CATALOGUE.get(technique) or CATALOGUE["lora"]
    default = next((p.default for p in entry.all_params if p.name == "max_length"), 256)
    try:
        return int(params.get("max_length") or default)
    except (TypeError, ValueError):
        return int(default)
