"""Job pages: starting a job from the training form, its estimate and preview, the live job page, cancelling."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.config import Settings
from app.http import auditing
from app.http.deps import AppSettings, Csrf, CurrentUser, DbSession, OwnedJob, Store
from app.http.lookups import adapter_in_workspace
from app.http.responses import is_htmx, redirect
from app.models import Dataset, Job
from app.services import adapters, attempts, bakeoff, job_estimates, jobs, row_preview, task_rows
from app.services.artifacts import ArtifactStore
from app.web.datasets import dataset_context
from app.web.templating import render
from app.web.train_form import (
    choices_from_form,
    datasets_from_form,
    devices_form_state,
    devices_from_form,
    form_estimate,
    mapping_from_form,
    max_length_of,
    seed_from_form,
    train_form_context,
)

router = APIRouter(dependencies=[Csrf])


@router.post("/jobs")
async def create_job(request: Request, user: CurrentUser, db: DbSession, settings: AppSettings, store: Store):
    form = await request.form()
    dataset, validation = datasets_from_form(db, form, user)
    technique, task, params = choices_from_form(form)
    devices, strategy, cpu_offload = devices_from_form(form)
    mapping = mapping_from_form(form, task)
    seed_raw = str(form.get("seed") or "0")
    seed = seed_from_form(form)
    seed = -1 if seed is None else seed  # refused by the job service with a plain message
    bakeoff_techniques = [str(t) for t in form.getlist("bakeoff_techniques")]
    try:
        if bakeoff_techniques:
            group_id, created = bakeoff.submit_bakeoff(
                db,
                settings,
                store,
                workspace_id=user.workspace_id,
                user_id=user.id,
                dataset=dataset,
                task=task,
                column_mapping=mapping,
                base_model=str(form.get("base_model") or ""),
                techniques=[technique, *bakeoff_techniques],
                params=params,
                seed=seed,
                preset=str(form.get("preset") or "") or None,
                validation_dataset=validation,
            )
            for job in created:
                jobs.send_wakeup(db, job)
            auditing.record(request, db, user, "bakeoff_started", ("group", group_id), {"job_ids": [j.id for j in created]})
            return redirect(request, f"/groups/{group_id}")
        job = jobs.submit_job(
            db,
            settings,
            store,
            workspace_id=user.workspace_id,
            user_id=user.id,
            dataset=dataset,
            task=task,
            column_mapping=mapping,
            base_model=str(form.get("base_model") or ""),
            technique=technique,
            params=params,
            seed=seed,
            name=str(form.get("name") or "") or None,
            validation_dataset=validation,
            parent_adapter=adapter_in_workspace(db, form.get("parent_adapter_id"), user) if form.get("parent_adapter_id") else None,
            devices=devices,
            strategy=strategy,
            cpu_offload=cpu_offload,
        )
    except jobs.JobError as exc:
        db.rollback()
        form_state = {
            "base_model": form.get("base_model"),
            "technique": technique,
            "task": task,
            "seed": seed_raw,
            "params": params,
            "preset": str(form.get("preset") or ""),
            "validation_dataset_id": str(validation.id) if validation else "",
            "parent_adapter_id": str(form.get("parent_adapter_id") or ""),
            **devices_form_state(form),
        }
        form_ctx = train_form_context(dataset, settings, form=form_state, guess=mapping, errors=exc.errors)
        return render(
            request, "dataset_detail.html", dataset_context(request, dataset, settings, store, train_form=form_ctx), status_code=422
        )
    jobs.send_wakeup(db, job)
    auditing.record(request, db, user, "job_started", ("job", job.id), {"technique": job.technique, "base_model": job.base_model})
    return redirect(request, f"/jobs/{job.id}")


@router.post("/jobs/estimate")
async def estimate_partial(request: Request, user: CurrentUser, db: DbSession, settings: AppSettings):
    """The form's estimate, re-computed as the user changes model, technique, task or settings (htmx)."""
    form = await request.form()
    dataset, validation = datasets_from_form(db, form, user)
    technique, task, params = choices_from_form(form)
    devices, strategy, cpu_offload = devices_from_form(form)
    estimate = form_estimate(
        dataset,
        settings,
        base_model=str(form.get("base_model") or ""),
        technique=technique,
        task=task,
        mapping=mapping_from_form(form, task),
        params=params,
        worker=job_estimates.preferred_worker(db),
        validation_rows=int(validation.row_count or 0) if validation is not None else None,
        devices=devices,
        strategy=strategy,
        cpu_offload=cpu_offload,
        seed=seed_from_form(form) or 0,
        validation_dataset_id=validation.id if validation is not None else None,
    )
    status = 422 if estimate.get("invalid") else 200
    return render(request, "_train_estimate.html", {"estimate": estimate}, status_code=status, headers={"Vary": "HX-Request"})


def preview_context(
    settings: Settings,
    store: ArtifactStore,
    dataset: Dataset,
    *,
    task: str,
    mapping: dict,
    base_model: str,
    max_length: int,
    validation_dataset: Dataset | None = None,
) -> dict:
    """The preview partial's context: three rows as the model sees them, or why they cannot be shown."""
    from app.services.prompt_preview import PreviewError

    try:
        examples = row_preview.preview_examples(
            settings,
            store,
            dataset,
            task=task,
            mapping=mapping,
            base_model=base_model,
            max_length=max_length,
            validation_dataset=validation_dataset,
        )
    except PreviewError as exc:
        return {"examples": [], "preview_error": str(exc), "max_length": max_length}
    skipped = task_rows.skipped_rows(store, dataset, task, mapping)
    return {"examples": examples, "preview_error": None, "max_length": max_length, "skipped": skipped}


@router.post("/jobs/preview")
async def preview_partial(request: Request, user: CurrentUser, db: DbSession, settings: AppSettings, store: Store):
    """Three rows exactly as the model will see them, for the chosen task, columns, model and length (htmx)."""
    form = await request.form()
    dataset, validation = datasets_from_form(db, form, user)
    technique, task, params = choices_from_form(form)
    # Reading rows and tokenizing is blocking work: off the event loop.
    ctx = await run_in_threadpool(
        lambda: preview_context(
            settings,
            store,
            dataset,
            task=task,
            mapping=mapping_from_form(form, task),
            base_model=str(form.get("base_model") or ""),
            max_length=max_length_of(technique, params),
            validation_dataset=validation,
        )
    )
    return render(request, "_train_preview.html", ctx, headers={"Vary": "HX-Request"})


def estimate_vs_actual(job: Job, adapter) -> list[dict]:
    """Rows of (what, estimated, actual, error) for the finished job's page."""
    estimate = (job.result or {}).get("estimate") or {}
    result = job.result or {}
    if not estimate or "error" in estimate:
        return []
    rows = [
        ("Peak memory", estimate.get("peak_memory_bytes"), result.get("peak_memory_bytes"), "bytes"),
        (
            "Time (load, train, evaluate)",
            estimate.get("seconds"),
            (job.finished_at - job.started_at).total_seconds() if job.finished_at and job.started_at else result.get("train_seconds"),
            "seconds",
        ),
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
        "points": [
            {"step": p.step, "loss": p.loss, "validation_loss": p.validation_loss}
            for p in points
            if p.loss is not None or p.validation_loss is not None
        ],
        # preference tuning: the chosen and rejected answers' log-probabilities by step
        "logps_points": [{"step": p.step, **p.extra} for p in points if p.extra and "chosen_logps" in p.extra],
        "last_point": points[-1] if points else None,
        "adapter": adapter,
        "estimate_rows": estimate_vs_actual(job, adapter) if job.is_finished else [],
        "validation": (job.result or {}).get("validation"),
        "validation_text": task_rows.describe_validation((job.result or {}).get("validation")),
        "attempts": attempts.attempts_for(db, job.id),
    }


@router.get("/jobs/{job_id}")
def job_page(request: Request, job: OwnedJob, db: DbSession):
    template = "_job_status.html" if is_htmx(request) else "job_detail.html"
    return render(request, template, job_context(db, job), headers={"Vary": "HX-Request", "Cache-Control": "no-store"})


@router.post("/jobs/{job_id}/cancel")
def cancel_job(request: Request, job: OwnedJob, user: CurrentUser, db: DbSession):
    jobs.request_cancel(db, job)
    auditing.record(request, db, user, "job_cancelled", ("job", job.id))
    if is_htmx(request):
        return render(request, "_job_status.html", job_context(db, job), headers={"Vary": "HX-Request"})
    return RedirectResponse(f"/jobs/{job.id}", status_code=303)
