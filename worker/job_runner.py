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
from pathlib import Path

from app.base_models import get_base_model
from app.config import get_settings
from app.db import session_scope
from app.models import Dataset, Job, JobStatus
from app.services import adapters as adapter_service
from app.services import datasets as dataset_service
from app.services import jobs
from app.services.artifacts import get_artifact_store
from worker.packaging import write_adapter_package
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

    def __init__(self, job_id: int):
        self.job_id = job_id
        self.cancel_requested = False
        self._losses: list[float] = []
        self._last_write = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{job_id}", daemon=True)

    def __enter__(self) -> "JobProgressTracker":
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
        if now - self._last_write < PROGRESS_WRITE_SECONDS and progress.step < progress.total_steps:
            return
        mean_loss = sum(self._losses) / len(self._losses)
        self._losses.clear()
        self._last_write = now
        with session_scope() as db:
            cancelled = jobs.record_progress(
                db, self.job_id, step=progress.step, total_steps=progress.total_steps, epoch=progress.epoch,
                eta_seconds=progress.eta_seconds, loss=mean_loss, learning_rate=progress.learning_rate,
                tokens_per_second=progress.tokens_per_second,
            )
        self.cancel_requested = cancelled or self.cancel_requested

    def should_stop(self) -> bool:
        return self.cancel_requested


def describe_failure(exc: BaseException) -> str:
    """A plain sentence for the job page; the traceback goes to the worker's log."""
    name = type(exc).__name__
    if isinstance(exc, JobInputError):
        return str(exc)
    if isinstance(exc, MemoryError) or "OutOfMemoryError" in name:
        return "The worker ran out of memory. Lower the batch size or the maximum length, or pick a smaller base model."
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return "The worker's disk is full. Free space in the data directory and start the job again."
    return f"Training failed: {name}: {exc}".strip()[:2000]


def build_spec(job: Job, dataset: Dataset | None, output_dir: Path) -> TrainingSpec:
    settings = get_settings()
    store = get_artifact_store()
    if dataset is None or not store.exists(dataset.storage_key):
        raise JobInputError("The dataset of this job was deleted. Upload it again and start a new job.")
    model = get_base_model(settings, job.base_model)
    if model is None or not model.available:
        raise JobInputError(f"The base model {job.base_model!r} is not installed on this worker.")
    pairs = dataset_service.instruction_pairs(store, dataset, job.column_mapping["prompt"], job.column_mapping["response"])
    if len(pairs) < 2:
        raise JobInputError("The dataset has fewer than 2 rows with both a prompt and a response.")
    train_rows, validation_rows = dataset_service.split_train_validation(pairs, float(job.params.get("validation_fraction", 0.1)), job.seed)
    return TrainingSpec(
        base_model_dir=model.location, technique=job.technique, params=dict(job.params),
        train_rows=train_rows, validation_rows=validation_rows, output_dir=str(output_dir), seed=job.seed,
    )


def run_training_job(job_id: int, worker_name: str) -> str:
    """Claim, train, package and record one job. Returns the job's final status."""
    with session_scope() as db:
        if not jobs.claim_job(db, job_id, worker_name):
            log.info("job %s: not claimed (already taken, finished or cancelled)", job_id)
            return "not-claimed"
    store = get_artifact_store()
    workdir = store.temp_path(f"-job-{job_id}")
    try:
        with session_scope() as db:
            job = db.get(Job, job_id)
            spec = build_spec(job, job.dataset, workdir / "adapter")
            card = _card_info(job)
        log.info("job %s: training %s on %s (%d train / %d validation rows)", job_id, spec.technique,
                 job.base_model, len(spec.train_rows), len(spec.validation_rows))
        from worker.training.loop import train  # torch is imported here, in the worker only

        with JobProgressTracker(job_id) as tracker:
            result = train(spec, tracker)
        if result.status == "cancelled":
            with session_scope() as db:
                jobs.finish_job(db, job_id, JobStatus.cancelled, result=_result_dict(result))
            return JobStatus.cancelled
        key = adapter_service.adapter_storage_key(job_id)
        package_dir = workdir / "package"
        shutil.copytree(workdir / "adapter", package_dir)
        card.update(_result_dict(result))
        write_adapter_package(package_dir, package_dir / adapter_service.ZIP_NAME, card)
        store.put_file(key, package_dir)
        size = (store.path(key) / "adapter_model.safetensors").stat().st_size
        with session_scope() as db:
            job = db.get(Job, job_id)
            jobs.record_adapter(db, job, storage_key=key, size_bytes=size, trainable_parameters=result.trainable_parameters,
                                metrics={"validation_loss": result.validation_loss, "train_loss": result.train_loss})
            jobs.finish_job(db, job_id, JobStatus.succeeded, result=_result_dict(result))
        log.info("job %s: succeeded in %.1fs", job_id, result.train_seconds)
        return JobStatus.succeeded
    except Exception as exc:  # noqa: BLE001 - every failure ends the job with a reason
        log.exception("job %s: failed", job_id)
        with session_scope() as db:
            jobs.finish_job(db, job_id, JobStatus.failed, error=describe_failure(exc))
        return JobStatus.failed
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _card_info(job: Job) -> dict:
    dataset = job.dataset
    return {
        "base_model": job.base_model, "technique": job.technique, "parameters": dict(job.params, seed=job.seed),
        "dataset_name": dataset.name if dataset else None, "dataset_rows": dataset.row_count if dataset else None,
        "dataset_sha256": dataset.sha256 if dataset else None,
    }


def _result_dict(result) -> dict:
    return {
        "steps": result.steps, "train_loss": result.train_loss, "validation_loss": result.validation_loss,
        "trainable_parameters": result.trainable_parameters, "total_parameters": result.total_parameters,
        "train_seconds": result.train_seconds, "tokens_seen": result.tokens_seen, "peak_memory_bytes": result.peak_memory_bytes,
    }
