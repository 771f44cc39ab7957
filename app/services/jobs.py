"""Jobs: submit, cancel, claim, progress and outcome. The database is the source of truth; the
broker only carries wake-ups, so every transition here is a conditional UPDATE.

What a job trains on is app/services/task_rows.py; why a request is refused, job_checks.py; its
estimate, job_estimates.py; the form's preview of its rows, row_preview.py."""

from __future__ import annotations

import logging
from datetime import timedelta
from functools import partial
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app import queue
from app.base_models import get_base_model
from app.config import Settings
from app.db import rows_matched
from app.domain.estimates import read_model_config
from app.domain.task_kinds import DEFAULT_TASK, TaskKind, UnknownTaskKind, get_task_kind
from app.domain.techniques import ParameterError, get_technique, preset_params, unavailable_reason, validate_params
from app.domain.text import without_controls
from app.models import Adapter, Dataset, Job, JobStatus, MetricPoint, utcnow
from app.services import attempts, job_layouts, quotas, serving
from app.services.artifacts import ArtifactStore
from app.services.job_checks import mapping_errors, params_errors, parent_adapter_errors, rows_errors, validation_file_errors
from app.services.job_estimates import estimate_for, pace_for, preferred_worker
from app.services.task_rows import task_rows, train_validation_rows
from app.services.wakeups import wake_after_commit

log = logging.getLogger(__name__)


class JobError(ValueError):
    """A job request that cannot be accepted, with per-field messages for the form."""

    def __init__(self, errors: dict[str, str]):
        super().__init__("; ".join(errors.values()))
        self.errors = errors


def submit_job(
    db: Session,
    settings: Settings,
    store: ArtifactStore,
    *,
    workspace_id: int,
    user_id: int | None,
    dataset: Dataset,
    task: str,
    column_mapping: dict[str, str],
    base_model: str,
    technique: str,
    params: dict[str, Any],
    seed: int = 0,
    name: str | None = None,
    preset: str | None = None,
    validation_dataset: Dataset | None = None,
    parent_adapter: Adapter | None = None,
    devices: str = "1",
    strategy: str = "auto",
    cpu_offload: bool = False,
) -> Job:
    """Validate a job request and add it as queued (flushed; the caller registers the wake-up and the boundary commits).

    A preset fills the parameters the request leaves out; the job keeps its estimate in result.
    `validation_dataset` (already checked to be in the workspace) replaces the held-out share.
    """
    errors: dict[str, str] = {}
    kind: TaskKind | None = None
    try:
        kind = get_task_kind(task)
    except UnknownTaskKind as exc:
        errors["task"] = str(exc)
    else:
        column_mapping = kind.clean_mapping(column_mapping)
        errors.update(mapping_errors(dataset, kind, column_mapping))
    model = get_base_model(settings, base_model)
    if model is None:
        errors["base_model"] = f"Unknown base model {base_model!r}."
    elif not model.available:
        errors["base_model"] = f"The base model {model.label} is not installed on this server. Run `tailor provision-demo` or import it."
    clean_params: dict[str, Any] = {}
    try:
        entry = get_technique(technique)
        reason = unavailable_reason(
            entry, kind.key if kind else None, read_model_config(model.location) if model is not None and model.available else None
        )
        if reason:
            errors["technique"] = reason
        if preset:  # sized, like the form's, to the worker that would take the job
            pace = None
            if kind is not None and model is not None and model.available:
                config = read_model_config(model.location)
                pace = pace_for(dataset, config, entry.key, kind.key, column_mapping, preferred_worker(db), base_model)
            params = {**preset_params(entry, kind.key if kind else DEFAULT_TASK, int(dataset.row_count or 0), preset, pace), **params}
        clean_params = validate_params(entry, params)
    except ParameterError as exc:
        errors.update(exc.errors)
    if kind is not None and clean_params:
        errors.update(params_errors(kind, clean_params))
    if parent_adapter is not None:
        errors.update(parent_adapter_errors(kind, technique, base_model, parent_adapter))
    if not errors and validation_dataset is not None:
        errors.update(validation_file_errors(store, dataset, validation_dataset, task, column_mapping))
    rows: list[tuple] = []
    if not errors and kind is not None and model is not None:
        rows = task_rows(store, dataset, task, column_mapping)
        errors.update(rows_errors(store, kind, rows, column_mapping, model.location, validation_dataset))
    if not (0 <= seed < 2**31):
        errors["seed"] = "The seed must be a whole number between 0 and 2147483647."
    if errors:
        raise JobError(errors)
    assert model is not None  # no errors: the base model is known and installed
    quotas.check_new_jobs(db, settings, workspace_id)  # QuotaExceeded, a plain refusal naming the limit, before the work below
    worker = preferred_worker(db)
    config = read_model_config(model.location)
    estimate = estimate_for(
        dataset,
        config,
        technique,
        clean_params,
        task,
        column_mapping,
        worker,
        validation_rows=int(validation_dataset.row_count or 0) if validation_dataset is not None else None,
        base_model=base_model,
        seed=seed,
        validation_dataset_id=validation_dataset.id if validation_dataset is not None else None,
    )
    plan, layout_errors = job_layouts.plan_or_errors(  # devices: one, all of one machine, or K machines x M (issue 13)
        db,
        settings,
        dataset,
        config,
        technique,
        clean_params,
        task,
        column_mapping,
        devices,
        strategy,
        cpu_offload,
    )
    if layout_errors:
        raise JobError(layout_errors)
    if plan is not None and plan.world > 1:
        estimate["layout"] = plan.as_dict()
    elif estimate.get("fits") is False:
        assert worker is not None and worker.memory_bytes is not None  # fits is known only for a worker of known memory
        raise JobError(
            {
                "batch_size": (
                    f"This job needs about {estimate['peak_memory_bytes'] / 2**30:.1f} GB of memory, more than the worker that would take "
                    f"it has ({worker.memory_bytes / 2**30:.1f} GB). Lower the batch size or the maximum length, or choose QLoRA."
                )
            }
        )
    *_, validation = train_validation_rows(
        store,
        dataset,
        task,
        column_mapping,
        fraction=float(clean_params.get("validation_fraction", 0.1)),
        seed=seed,
        validation_dataset=validation_dataset,
        rows=rows,
    )
    # Again with the workspace locked until the commit: submits arriving together are counted one after another.
    quotas.reserve_new_jobs(db, settings, workspace_id)
    job = Job(
        workspace_id=workspace_id,
        dataset_id=dataset.id,
        created_by_id=user_id,
        validation_dataset_id=validation_dataset.id if validation_dataset is not None else None,
        parent_adapter_id=parent_adapter.id if parent_adapter is not None else None,
        name=(without_controls(name).strip() or f"{dataset.name} · {get_technique(technique).name}")[:300],
        task=task,
        column_mapping=column_mapping,
        base_model=base_model,
        technique=technique,
        params=clean_params,
        seed=seed,
        queue="gpu",
        status=JobStatus.queued,
        result={"estimate": estimate, "validation": validation}
        | ({"parent_adapter_id": parent_adapter.id} if parent_adapter is not None else {}),
        layout={**plan.as_dict(), "request": devices} if plan is not None else None,
    )
    db.add(job)
    db.flush()
    return job


def send_wakeup(db: Session, job: Job) -> None:
    """Wake a worker for the (flushed) job once `db` commits; never if it rolls back."""
    wake_after_commit(db, partial(_send_train, job_id=job.id, queue_name=job.queue))


def _send_train(db: Session, job_id: int, queue_name: str) -> None:
    """Send the job's wake-up. If the broker is down the job stays queued and the reconciler
    sends it later: the committed row, not the message, is what counts."""
    try:
        queue.send_train(job_id, queue_name)
    except Exception:  # noqa: BLE001 - any broker failure leaves a queued row for the reconciler
        log.warning("job %s: could not reach the broker; the reconciler will send it", job_id, exc_info=True)
        return
    mark_enqueued(db, job_id)


def mark_enqueued(db: Session, job_id: int) -> None:
    db.execute(update(Job).where(Job.id == job_id).values(enqueued_at=utcnow()))


def request_cancel(db: Session, job: Job) -> Job:
    """Ask a job to stop: a queued job is cancelled at once, a running one stops at its next step."""
    now = utcnow()
    cancelled_now = rows_matched(
        db,
        update(Job)
        .where(Job.id == job.id, Job.status == JobStatus.queued)
        .values(status=JobStatus.cancelled, cancel_requested=True, finished_at=now),
    )
    if not cancelled_now:
        db.execute(update(Job).where(Job.id == job.id, Job.status == JobStatus.running).values(cancel_requested=True))
    db.flush()
    db.refresh(job)
    return job


def claim_job(db: Session, job_id: int, worker_name: str) -> bool:
    """queued -> running, attempt + 1. False if someone else claimed it or it is no longer queued."""
    now = utcnow()
    claimed = rows_matched(
        db,
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.queued, Job.cancel_requested.is_(False))
        .values(status=JobStatus.running, attempt=Job.attempt + 1, worker_name=worker_name, started_at=now, heartbeat_at=now, error=None),
    )
    if claimed == 1:
        job = db.execute(select(Job.attempt, Job.step).where(Job.id == job_id)).one()
        attempts.open_attempt(db, job_id, job.attempt, worker_name, job.step)
    return claimed == 1


def record_progress(
    db: Session,
    job_id: int,
    *,
    step: int,
    total_steps: int,
    epoch: float,
    eta_seconds: float | None,
    loss: float | None,
    learning_rate: float | None,
    tokens_per_second: float | None,
    validation_loss: float | None = None,
    grad_norm: float | None = None,
    memory_bytes: int | None = None,
    extra: dict[str, float] | None = None,
) -> bool:
    """Write one metric point and the job's progress; returns True if cancellation was requested."""
    db.add(
        MetricPoint(
            job_id=job_id,
            step=step,
            epoch=epoch,
            loss=loss,
            learning_rate=learning_rate,
            tokens_per_second=tokens_per_second,
            validation_loss=validation_loss,
            grad_norm=grad_norm,
            memory_bytes=memory_bytes,
            extra=extra or None,
        )
    )
    db.execute(
        update(Job)
        .where(Job.id == job_id)
        .values(step=step, total_steps=total_steps, epoch=epoch, eta_seconds=eta_seconds, heartbeat_at=utcnow())
    )
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
    if rows_matched(db, update(Job).where(Job.id == job_id, Job.status == JobStatus.running).values(**values)):
        step, workspace_id = db.execute(select(Job.step, Job.workspace_id).where(Job.id == job_id)).one()
        attempts.close_attempt(db, job_id, str(status), ended_step=step, reason=error)
        from app.services import dispatch  # dispatch builds on this module

        dispatch.wake_held_back(db, workspace_id)  # a job its running-jobs limit held back starts now


def record_adapter(db: Session, job: Job, *, storage_key: str, size_bytes: int, trainable_parameters: int, metrics: dict) -> Adapter:
    adapter = db.scalar(select(Adapter).where(Adapter.job_id == job.id))
    if adapter is None:
        adapter = Adapter(
            workspace_id=job.workspace_id,
            job_id=job.id,
            name=job.name,
            technique=job.technique,
            base_model=job.base_model,
            storage_key=storage_key,
        )
        db.add(adapter)
    adapter.storage_key = storage_key
    adapter.size_bytes = size_bytes
    adapter.trainable_parameters = trainable_parameters
    adapter.metrics = metrics
    db.flush()
    serving.assign_slug(db, adapter, job.id)  # its /v1 model name, the one the model card names
    return adapter


def jobs_for(db: Session, workspace_id: int, limit: int = 100) -> list[Job]:
    return list(db.scalars(select(Job).where(Job.workspace_id == workspace_id).order_by(Job.id.desc()).limit(limit)))


def metric_points(db: Session, job_id: int) -> list[MetricPoint]:
    return list(db.scalars(select(MetricPoint).where(MetricPoint.job_id == job_id).order_by(MetricPoint.step, MetricPoint.id)))


def jobs_needing_wakeup(db: Session, settings: Settings, queued_grace_seconds: int = 60) -> tuple[list[int], list[int]]:
    """Reconciliation: (queued jobs whose message may be lost, running jobs whose worker died).
    Dead running jobs are put back to queued here so they are re-sent with the others, unless
    their worker died the same way three times in a row: those end as failed."""
    now = utcnow()
    stale_before = now - timedelta(seconds=settings.heartbeat_stale_seconds)
    dead = []
    for job_id in db.scalars(select(Job.id).where(Job.status == JobStatus.running, Job.heartbeat_at < stale_before)).all():
        lost = "The worker stopped responding; the job was put back in the queue."
        if not rows_matched(
            db,
            update(Job)
            .where(Job.id == job_id, Job.status == JobStatus.running, Job.heartbeat_at < stale_before)
            .values(status=JobStatus.queued, error=lost),
        ):
            continue  # it answered after all
        step = db.scalar(select(Job.step).where(Job.id == job_id))
        history = attempts.close_attempt(db, job_id, attempts.LOST, ended_step=step, reason=lost, at=now)
        if attempts.lost_the_same_way(history):
            db.execute(
                update(Job)
                .where(Job.id == job_id)
                .values(status=JobStatus.failed, finished_at=now, eta_seconds=None, error=attempts.gave_up_reason(history))
            )
            continue
        dead.append(job_id)
    resend_before = now - timedelta(seconds=queued_grace_seconds)
    queued = list(
        db.scalars(select(Job.id).where(Job.status == JobStatus.queued, (Job.enqueued_at.is_(None)) | (Job.enqueued_at < resend_before)))
    )
    return queued, dead
