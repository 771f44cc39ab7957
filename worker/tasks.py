"""Thin Celery tasks: take an id, hand over to a pure pipeline, nothing else."""

from __future__ import annotations

from app.queue import EVALUATE_TASK, EXPORT_GGUF_TASK, EXPORT_TASK, GENERATE_TASK, RECONCILE_TASK, TRAIN_TASK
from worker.celery_app import celery_app


@celery_app.task(name=TRAIN_TASK, bind=True)
def train(self, job_id: int) -> str:
    """A wake-up for `job_id`; the worker takes whichever queued job is fairest (app/services/dispatch.py)."""
    from worker.job_runner import run_next_training_job

    return run_next_training_job(job_id, worker_name=self.request.hostname or "worker")


@celery_app.task(name=RECONCILE_TASK)
def reconcile() -> dict:
    from worker.reconcile import reconcile_jobs

    return reconcile_jobs()


@celery_app.task(name=EVALUATE_TASK)
def evaluate(adapter_id: int) -> str:
    from worker.evaluation.runner import run_evaluation

    return run_evaluation(adapter_id)


@celery_app.task(name=GENERATE_TASK)
def generate(request_id: str) -> str:
    from worker.playground import run_generation

    return run_generation(request_id)


@celery_app.task(name=EXPORT_TASK)
def export_merged(adapter_id: int) -> str:
    from worker.export import run_merged_export

    return run_merged_export(adapter_id)


@celery_app.task(name=EXPORT_GGUF_TASK)
def export_gguf(adapter_id: int) -> str:
    from worker.export import run_gguf_export

    return run_gguf_export(adapter_id)
