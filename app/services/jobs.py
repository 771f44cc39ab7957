"""Jobs: submit, cancel, claim, progress and outcome. The database is the source of truth; the
broker only carries wake-ups, so every transition here is a conditional UPDATE."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app import queue
from app.base_models import get_base_model
from app.config import Settings
from app.models import Adapter, Dataset, Job, JobStatus, MetricPoint, utcnow
from app.services.artifacts import LocalArtifactStore
from app.services.datasets import instruction_pairs
from app.techniques import ParameterError, get_technique, validate_params

log = logging.getLogger(__name__)

TASK_COLUMNS = {"instruction": ("prompt", "response")}


class JobError(ValueError):
    """A job request that cannot be accepted, with per-field messages for the form."""

    def __init__(self, errors: dict[str, str]):
        super().__init__("; ".join(errors.values()))
        self.errors = errors


def submit_job(db: Session, settings: Settings, store: LocalArtifactStore, *, workspace_id: int, user_id: int | None,
               dataset: Dataset, task: str, column_mapping: dict[str, str], base_model: str, technique: str,
               params: dict[str, Any], seed: int = 0, name: str | None = None) -> Job:
    """Validate a job request and commit it as queued (the caller then sends the wake-up)."""
    errors: dict[str, str] = {}
    if task not in TASK_COLUMNS:
        errors["task"] = f"Unknown task {task!r}. Choose one of: {', '.join(TASK_COLUMNS)}."
    else:
        for role in TASK_COLUMNS[task]:
            column = column_mapping.get(role)
            if not column:
                errors[role] = f"Choose the column that holds the {role}."
            elif column not in dataset.columns:
                errors[role] = f"The dataset has no column named {column!r}. Its columns are: {', '.join(dataset.columns)}."
        if not errors and column_mapping["prompt"] == column_mapping["response"]:
            errors["response"] = "The prompt and the response must be different columns."
    model = get_base_model(settings, base_model)
    if model is None:
        errors["base_model"] = f"Unknown base model {base_model!r}."
    elif not model.available:
        errors["base_model"] = f"The base model {model.label} is not installed on this server. Run `tailor provision-demo` or import it."
    clean_params: dict[str, Any] = {}
    try:
        entry = get_technique(technique)
        if task in TASK_COLUMNS and task not in entry.task_kinds:
            errors["technique"] = f"{entry.name} does not support the {task} task."
        clean_params = validate_params(entry, params)
    except ParameterError as exc:
        errors.update(exc.errors)
    if not errors:
        usable = len(instruction_pairs(store, dataset, column_mapping["prompt"], column_mapping["response"]))
        if usable < 2:
            errors["response"] = (
                f"Only {usable} row(s) have both a prompt and a response; training needs at least 2 "
                "(one to learn from, one to check against). Check the column mapping."
            )
    if not (0 <= seed < 2**31):
        errors["seed"] = "The seed must be a whole number between 0 and 2147483647."
    if errors:
        raise JobError(errors)
    job = Job(
        workspace_id=workspace_id, dataset_id=dataset.id, created_by_id=user_id,
        name=(name or f"{dataset.name} · {get_technique(technique).name}")[:300], task=task,
        column_mapping={role: column_mapping[role] for role in TASK_COLUMNS[task]}, base_model=base_model,
        technique=technique, params=clean_params, seed=seed, queue="gpu", status=JobStatus.queued,
    )
    db.add(job)
    db.flush()
    return job


def send_wakeup(db: Session, job: Job) -> None:
    """Send the job's wake-up. If the broker is down the job stays queued and the reconciler
    sends it later: the committed row, not the message, is what counts."""
    try:
        queue.send_train(job.id, job.queue)
    except Exception:  # noqa: BLE001 - any broker failure leaves a queued row for the reconciler
        log.warning("job %s: could not reach the broker; the reconciler will send it", job.id, exc_info=True)
        return
    mark_enqueued(db, job.id)
    db.commit()


def mark_enqueued(db: Session, job_id: int) -> None:
    db.execute(update(Job).where(Job.id == job_id).values(enqueued_at=utcnow()))


def request_cancel(db: Session, job: Job) -> Job:
    """Ask a job to stop: a queued job is cancelled at once, a running one stops at its next step."""
    now = utcnow()
    cancelled_now = db.execute(
        update(Job).where(Job.id == job.id, Job.status == JobStatus.queued)
        .values(status=JobStatus.cancelled, cancel_requested=True, finished_at=now)
    ).rowcount
    if not cancelled_now:
        db.execute(update(Job).where(Job.id == job.id, Job.status == JobStatus.running).values(cancel_requested=True))
    db.flush()
    db.refresh(job)
    return job


def claim_job(db: Session, job_id: int, worker_name: str) -> bool:
    """queued -> running, attempt + 1. False if someone else claimed it or it is no longer queued."""
    now = utcnow()
    claimed = db.execute(
        update(Job).where(Job.id == job_id, Job.status == JobStatus.queued, Job.cancel_requested.is_(False))
        .values(status=JobStatus.running, attempt=Job.attempt + 1, worker_name=worker_name,
                started_at=now, heartbeat_at=now, error=None)
    ).rowcount
    return claimed == 1


def record_progress(db: Session, job_id: int, *, step: int, total_steps: int, epoch: float, eta_seconds: float | None,
                    loss: float | None, learning_rate: float | None, tokens_per_second: float | None) -> bool:
    """Write one metric point and the job's progress; returns True if cancellation was requested."""
    db.add(MetricPoint(job_id=job_id, step=step, epoch=epoch, loss=loss, learning_rate=learning_rate, tokens_per_second=tokens_per_second))
    db.execute(update(Job).where(Job.id == job_id).values(step=step, total_steps=total_steps, epoch=epoch, eta_seconds=eta_seconds, heartbeat_at=utcnow()))
    return bool(db.scalar(select(Job.cancel_requested).where(Job.id == job_id)))


def heartbeat(db: Session, job_id: int) -> bool:
    """Touch the heartbeat; returns True if cancellation was requested."""
    db.execute(update(Job).where(Job.id == job_id).values(heartbeat_at=utcnow()))
    return bool(db.scalar(select(Job.cancel_requested).where(Job.id == job_id)))


def finish_job(db: Session, job_id: int, status: JobStatus, *, error: str | None = None, result: dict | None = None) -> None:
    values: dict[str, Any] = {"status": status, "finished_at": utcnow(), "eta_seconds": 0 if status == JobStatus.succeeded else None}
    if error is not None:
        values["error"] = error
    if result is not None:
        values["result"] = result
    db.execute(update(Job).where(Job.id == job_id, Job.status == JobStatus.running).values(**values))


def record_adapter(db: Session, job: Job, *, storage_key: str, size_bytes: int, trainable_parameters: int, metrics: dict) -> Adapter:
    adapter = db.scalar(select(Adapter).where(Adapter.job_id == job.id))
    if adapter is None:
        adapter = Adapter(workspace_id=job.workspace_id, job_id=job.id, name=job.name, technique=job.technique, base_model=job.base_model, storage_key=storage_key)
        db.add(adapter)
    adapter.storage_key = storage_key
    adapter.size_bytes = size_bytes
    adapter.trainable_parameters = trainable_parameters
    adapter.metrics = metrics
    db.flush()
    return adapter


def jobs_for(db: Session, workspace_id: int, limit: int = 100) -> list[Job]:
    return list(db.scalars(select(Job).where(Job.workspace_id == workspace_id).order_by(Job.id.desc()).limit(limit)))


def metric_points(db: Session, job_id: int) -> list[MetricPoint]:
    return list(db.scalars(select(MetricPoint).where(MetricPoint.job_id == job_id).order_by(MetricPoint.step, MetricPoint.id)))


def jobs_needing_wakeup(db: Session, settings: Settings, queued_grace_seconds: int = 60) -> tuple[list[int], list[int]]:
    """Reconciliation: (queued jobs whose message may be lost, running jobs whose worker died).
    Dead running jobs are put back to queued here so they are re-sent with the others."""
    now = utcnow()
    stale_before = now - timedelta(seconds=settings.heartbeat_stale_seconds)
    dead = list(db.scalars(select(Job.id).where(Job.status == JobStatus.running, Job.heartbeat_at < stale_before)))
    for job_id in dead:
        db.execute(update(Job).where(Job.id == job_id, Job.status == JobStatus.running, Job.heartbeat_at < stale_before)
                   .values(status=JobStatus.queued, error="The worker stopped responding; the job was put back in the queue."))
    resend_before = now - timedelta(seconds=queued_grace_seconds)
    queued = list(db.scalars(select(Job.id).where(Job.status == JobStatus.queued, (Job.enqueued_at.is_(None)) | (Job.enqueued_at < resend_before))))
    return queued, dead
