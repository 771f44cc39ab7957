"""One training job from claim to outcome: the glue between the database and the pure pipeline.

The task calls `run_training_job(job_id)`. Everything that touches the database lives here; the
training itself is `worker.training.loop.train`, which knows nothing of jobs or tables.
"""

from __future__ import annotations

import errno
import logging
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import object_session

from app.base_models import base_model_provenance, get_base_model
from app.config import get_settings
from app.db import run_in_session, session_scope
from app.domain.serving import adapter_slug
from app.logs import job_log_context
from app.models import Adapter, Dataset, Job, JobStatus
from app.services import adapters as adapter_service
from app.services import dispatch, job_checks, job_layouts, jobs, task_rows
from app.services.artifacts import get_artifact_store
from app.services.throughput import record_job_throughput
from worker.launcher import AttemptLost, PlainFailure, launch_training, run_layout_for
from worker.packaging import write_adapter_package
from worker.rows import require_row
from worker.training.spec import Progress, TrainingSpec

log = logging.getLogger("tailor.worker")

HEARTBEAT_SECONDS = 5.0
PROGRESS_WRITE_SECONDS = 1.0


class JobInputError(RuntimeError):
    """The job cannot start because something it needs is missing; the message is for people."""


class JobProgressTracker:
    """TrainingCallbacks that write throttled metric points and a heartbeat, and read the
    cancel flag. A background thread keeps the heartbeat fresh even during long steps or while
    the base model loads."""

    def __init__(self, job_id: int, on_checkpoint: Callable[[], None] | None = None):
        self.job_id = job_id
        self._on_checkpoint = on_checkpoint
        self.cancel_requested = False
        self._losses: list[float] = []
        self._last_write = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{job_id}", daemon=True)

    def __enter__(self) -> JobProgressTracker:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            try:
                with session_scope() as db:
                    self.cancel_requested = jobs.heartbeat(db, self.job_id) or self.cancel_requested
            except Exception:  # noqa: BLE001 - a missed beat is retried; the reconciler tolerates gaps
                log.warning("job %s: heartbeat write failed; retrying", self.job_id, exc_info=True)

    def on_progress(self, progress: Progress) -> None:
        self._losses.append(progress.loss)
        now = time.monotonic()
        if (
            now - self._last_write < PROGRESS_WRITE_SECONDS and progress.step < progress.total_steps and progress.validation_loss is None
        ):  # a held-out measurement is always written
            return
        mean_loss = sum(self._losses) / len(self._losses)
        self._losses.clear()
        self._last_write = now
        # Retried while the database is briefly away (restart, failover): training waits, never dies.
        cancelled = run_in_session(
            lambda db: jobs.record_progress(
                db,
                self.job_id,
                step=progress.step,
                total_steps=progress.total_steps,
                epoch=progress.epoch,
                eta_seconds=progress.eta_seconds,
                loss=mean_loss,
                learning_rate=progress.learning_rate,
                tokens_per_second=progress.tokens_per_second,
                validation_loss=progress.validation_loss,
                grad_norm=progress.grad_norm,
                memory_bytes=progress.memory_bytes,
                extra=progress.extras,
            )
        )
        self.cancel_requested = cancelled or self.cancel_requested

    def should_stop(self) -> bool:
        return self.cancel_requested

    def on_checkpoint(self) -> None:
        """A checkpoint was just written: make it durable where the next attempt will look."""
        if self._on_checkpoint is not None:
            self._on_checkpoint()


def describe_failure(exc: BaseException) -> str:
    """A plain sentence for the job page; the traceback goes to the worker's log."""
    name = type(exc).__name__
    if isinstance(exc, JobInputError | PlainFailure):
        return str(exc)
    if isinstance(exc, MemoryError) or "OutOfMemoryError" in name or "can't allocate memory" in str(exc):
        return "The worker ran out of memory. Lower the batch size or the maximum length, or pick a smaller base model."
    if name == "BaseModelUnreadable":  # worker.training.loading; not imported here (torch)
        return (
            f"{exc} The files are damaged or incomplete on this worker: copy the model folder again (for the demo "
            "model run `tailor provision-demo`) and start the job again."
        )
    if _disk_full(exc):
        return "The worker's disk is full. Free space in the data directory and start the job again."
    return f"Training failed: {name}: {exc}".strip()[:2000]


def _disk_full(exc: BaseException | None) -> bool:
    """ENOSPC anywhere in the chain; libraries such as safetensors wrap it in their own errors."""
    while exc is not None:
        if (isinstance(exc, OSError) and exc.errno == errno.ENOSPC) or "No space left on device" in str(exc) or "StorageFull" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def build_spec(job: Job, dataset: Dataset | None, output_dir: Path, checkpoint_dir: Path | None = None) -> TrainingSpec:
    settings = get_settings()
    store = get_artifact_store()
    if dataset is None or not store.exists(dataset.storage_key):
        raise JobInputError("The dataset of this job was deleted. Upload it again and start a new job.")
    model = get_base_model(settings, job.base_model)
    if model is None or not model.available:
        raise JobInputError(f"The base model {job.base_model!r} is not installed on this worker.")
    task = job.task or "instruction"
    validation_dataset = job.validation_dataset
    if (job.validation_dataset_id is not None or ((job.result or {}).get("validation") or {}).get("source") == "file") and (
        validation_dataset is None or not store.exists(validation_dataset.storage_key)
    ):
        raise JobInputError("The validation file of this job was deleted. Upload it again and start a new job.")
    rows = task_rows.task_rows(store, dataset, task, job.column_mapping)
    min_rows = 1 if validation_dataset is not None else job_checks.MIN_ROWS
    if len(rows) < min_rows:
        raise JobInputError(f"The dataset has fewer than {min_rows} usable rows for the {task} task; check the column mapping.")
    # A validation file replaces the held-out share; its masked training copy is read when masking is on.
    train_rows, validation_rows, validation = task_rows.train_validation_rows(
        store,
        dataset,
        task,
        job.column_mapping,
        fraction=float(job.params.get("validation_fraction", 0.1)),
        seed=job.seed,
        validation_dataset=validation_dataset,
        rows=rows,
    )
    if not validation_rows:
        raise JobInputError("The validation file has no usable rows for this column mapping; choose another file.")
    return TrainingSpec(
        base_model_dir=model.location,
        technique=job.technique,
        params=dict(job.params),
        train_rows=train_rows,
        validation_rows=validation_rows,
        output_dir=str(output_dir),
        seed=job.seed,
        task=task,
        checkpoint_dir=str(checkpoint_dir) if checkpoint_dir else None,
        validation_source=validation,
        parent_adapter_dir=_parent_adapter_dir(job, store),
    )


def _parent_adapter_dir(job: Job, store) -> str | None:
    """The folder of the adapter a job continues from (preference tuning), None when it starts afresh."""
    asked = job.parent_adapter_id is not None or (job.result or {}).get("parent_adapter_id") is not None
    if not asked:
        return None
    db = object_session(job)
    parent = db.get(Adapter, job.parent_adapter_id) if db is not None and job.parent_adapter_id is not None else None
    if parent is None or not store.exists(parent.storage_key):
        raise JobInputError("The adapter this job continues from was deleted. Start a new job from the base model or another adapter.")
    return str(store.path(parent.storage_key))


def run_next_training_job(woken_for: int, worker_name: str) -> str:
    """A wake-up: claim the queued job that is fairest to run next (app/services/dispatch.py; not
    necessarily `woken_for`, the job whose message this was) and run it. Returns its final status."""
    with session_scope() as db:
        queue_name = db.scalar(select(Job.queue).where(Job.id == woken_for)) or "gpu"
        job_id = dispatch.claim_next_job(db, get_settings(), worker_name, queue_name, woken_for=woken_for)
    if job_id is None:
        log.info("woken for job %s: no queued job may run now (taken, finished, cancelled or over a quota)", woken_for)
        return "not-claimed"
    if job_id != woken_for:
        log.info("woken for job %s: job %s is fairer to run first", woken_for, job_id)
    with job_log_context(job_id):
        return run_claimed_job(job_id)


def run_training_job(job_id: int, worker_name: str) -> str:
    """Claim this very job, train, package and record it. Returns the job's final status."""
    with session_scope() as db:
        if not jobs.claim_job(db, job_id, worker_name):
            log.info("job %s: not claimed (already taken, finished or cancelled)", job_id)
            return "not-claimed"
    return run_claimed_job(job_id)


def run_claimed_job(job_id: int) -> str:
    """Train, package and record a job this worker has claimed (it is running)."""
    store = get_artifact_store()
    workdir = store.temp_path(f"-job-{job_id}")
    # Checkpoints outlive a dead worker: the next attempt of this job resumes from them.
    checkpoint_dir = store.refresh(checkpoint_key(job_id))
    drop_checkpoint = True  # at the end; a lost rank leaves them for the next attempt too
    try:
        with session_scope() as db:
            job = require_row(db, Job, job_id)  # deleted since the claim: RowGone ends the job as failed
            spec = build_spec(job, job.dataset, workdir / "adapter", checkpoint_dir)
            card = _card_info(job)
            base_location = get_base_model(get_settings(), job.base_model)
            if base_location is None:  # build_spec found it; only a catalogue change in between gets here
                raise JobInputError(f"The base model {job.base_model!r} is not installed on this worker.")
            # The zip travels: it names the base model by its public id, and the /v1 model name it will answer to.
            card["base_model"] = base_location.public_name
            card["serving_model"] = adapter_slug(job.name, job.id)
            card["serving_url"] = get_settings().serve_public_url or f"http://{get_settings().host}:{get_settings().port}/v1"
            in_bakeoff = job.group_id is not None  # a bake-off's recommendation needs every adapter scored
            estimate = (job.result or {}).get("estimate")
            recipe = {
                "task": spec.task,
                "column_mapping": dict(job.column_mapping or {}),
                "base_model": job.base_model,
                "technique": job.technique,
                "params": dict(job.params),
                "seed": job.seed,
                "dataset_sha256": job.dataset.sha256 if job.dataset else None,
                "validation_dataset_sha256": spec.validation_source.get("dataset_sha256"),
            }
            card["validation_summary"] = task_rows.describe_validation(spec.validation_source)
            layout = run_layout_for(job.layout, get_settings())
        # The base model's revision: a content fingerprint for local folders (hashed once, then cached).
        provenance = {f"base_model_{k}": v for k, v in base_model_provenance(base_location).items()}
        card.update(provenance)
        recipe.update(provenance)
        log.info(
            "job %s: training %s on %s (%d train / %d validation rows)",
            job_id,
            spec.technique,
            job.base_model,
            len(spec.train_rows),
            len(spec.validation_rows),
        )
        with JobProgressTracker(job_id, on_checkpoint=lambda: store.mirror(checkpoint_key(job_id))) as tracker:
            # A world of one trains in this process; more devices run as a process group (worker/launcher.py).
            result = launch_training(spec, tracker, layout, workdir, job_id=job_id, on_ranks=lambda ranks: _record_ranks(job_id, ranks))
        if result.status == "cancelled":
            run_in_session(
                lambda db: jobs.finish_job(
                    db, job_id, JobStatus.cancelled, result=_result_dict(result, recipe, estimate, spec.validation_source)
                )
            )
            return JobStatus.cancelled
        key = adapter_service.adapter_storage_key(job_id)
        package_dir = workdir / "package"
        shutil.copytree(workdir / "adapter", package_dir)
        card.update(_result_dict(result, recipe, estimate, spec.validation_source))
        write_adapter_package(package_dir, package_dir / adapter_service.ZIP_NAME, card)
        store.put_file(key, package_dir)
        # The adapter is stored: the checkpoints go before the job shows as succeeded, so nothing of
        # a finished job is left behind once anyone sees it finished (they went after, in `finally`).
        _drop_checkpoint(store, job_id)
        drop_checkpoint = False
        size = sum(f.stat().st_size for f in store.path(key).glob("*.safetensors"))
        metrics = {"validation_loss": result.validation_loss, "train_loss": result.train_loss, **provenance}
        if result.validation_accuracy is not None:
            metrics["validation_accuracy"] = result.validation_accuracy
        metrics.update(result.extra_metrics)  # preference tuning: reward accuracy and margin with intervals

        def record_success(db) -> int:
            adapter = jobs.record_adapter(
                db,
                require_row(db, Job, job_id),
                storage_key=key,
                size_bytes=size,
                trainable_parameters=result.trainable_parameters,
                metrics=metrics,
            )
            jobs.finish_job(db, job_id, JobStatus.succeeded, result=_result_dict(result, recipe, estimate, spec.validation_source))
            # This worker's measured speed for this base model and technique: later estimates use it.
            finished = require_row(db, Job, job_id)
            record_job_throughput(
                db,
                finished,
                finished.worker_name or "",  # set by the claim
                tokens=result.tokens_seen,
                train_seconds=result.train_seconds,
                eval_seconds=result.eval_seconds,
                peak_memory_bytes=result.peak_memory_bytes,
            )
            return adapter.id

        adapter_id = run_in_session(record_success)
        log.info("job %s: succeeded in %.1fs", job_id, result.train_seconds)
        if get_settings().auto_evaluate or in_bakeoff:  # every task kind: generations, labels or loss
            _queue_evaluation(adapter_id)
        return JobStatus.succeeded
    except AttemptLost as exc:  # a rank vanished: like a dead worker, the job goes back to the queue
        lost = str(exc)
        log.warning("job %s: %s", job_id, lost)
        drop_checkpoint = False
        run_in_session(lambda db: job_layouts.release_lost_attempt(db, job_id, lost))
        return JobStatus.queued
    except Exception as exc:  # noqa: BLE001 - every failure ends the job with a reason
        log.exception("job %s: failed", job_id)
        reason = describe_failure(exc)
        run_in_session(lambda db: jobs.finish_job(db, job_id, JobStatus.failed, error=reason))
        return JobStatus.failed
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        # Reached only when this process finishes the job (any outcome); a killed worker
        # leaves the checkpoints for the next attempt.
        if drop_checkpoint:
            _drop_checkpoint(store, job_id)


def _drop_checkpoint(store, job_id: int) -> None:
    try:
        store.delete(checkpoint_key(job_id))
    except Exception:  # noqa: BLE001 - an unreachable bucket leaves a stale checkpoint, not a failed job
        log.warning("job %s: could not delete its checkpoint", job_id, exc_info=True)


def _record_ranks(job_id: int, ranks: dict[int, dict]) -> None:
    try:
        run_in_session(lambda db: job_layouts.record_ranks(db, job_id, ranks))
    except Exception:  # noqa: BLE001 - the ranks' memory is shown when it can be written; training goes on
        log.warning("job %s: could not record its ranks", job_id, exc_info=True)


def _queue_evaluation(adapter_id: int) -> None:
    """Score the new adapter next to its base model in the background (the comparison page's data)."""
    from app.services.adapters import request_evaluation

    try:
        run_in_session(lambda db: request_evaluation(db, require_row(db, Adapter, adapter_id)))
    except Exception:  # noqa: BLE001 - the adapter is ready either way; evaluation can be asked for later
        log.warning("adapter %s: could not queue its evaluation", adapter_id, exc_info=True)


def checkpoint_key(job_id: int) -> str:
    """Where a job's checkpoints live across attempts: in the store, so that with a bucket the
    next attempt may run on another machine."""
    return f"work/job-{job_id}/checkpoint"


def _card_info(job: Job) -> dict:
    dataset = job.dataset
    return {
        "base_model": job.base_model,
        "technique": job.technique,
        "parameters": dict(job.params, seed=job.seed),
        "task": job.task,
        "dataset_name": dataset.name if dataset else None,
        "dataset_rows": dataset.row_count if dataset else None,
        "dataset_sha256": dataset.sha256 if dataset else None,
    }


def _result_dict(result, recipe: dict | None = None, estimate: dict | None = None, validation: dict | None = None) -> dict:
    data = {
        "steps": result.steps,
        "train_loss": result.train_loss,
        "validation_loss": result.validation_loss,
        "trainable_parameters": result.trainable_parameters,
        "total_parameters": result.total_parameters,
        "train_seconds": result.train_seconds,
        "tokens_seen": result.tokens_seen,
        "peak_memory_bytes": result.peak_memory_bytes,
        "best_validation_loss": result.best_validation_loss,
        "stopped_early": result.stopped_early,
        "resumed_from_step": result.resumed_from_step,
        "validation_accuracy": result.validation_accuracy,
        "label_names": result.label_names,
        "preference": result.extra_metrics or None,
        # Everything needed to run the job again the same way.
        "reproducibility": {**(recipe or {}), "data_sha256": result.data_sha256, "environment": result.environment},
    }
    if estimate:
        data["estimate"] = estimate  # kept so the job page can show estimate vs actual
    if validation:
        data["validation"] = validation  # where the held-out rows came from, their count and the leakage check
    return data
