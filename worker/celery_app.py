"""The Celery app of the workers, with every setting explicit and explained.

Messages are only wake-ups carrying a job id: the job's row in the database is the truth, claimed
with a conditional UPDATE, so a duplicate or redelivered message can never run a job twice, and a
lost message is re-sent by the reconciler (worker start-up and every minute).
"""

from __future__ import annotations

import logging
import os
import socket

from celery import Celery
from celery.signals import setup_logging, worker_process_init, worker_ready, worker_shutdown

from app.config import get_settings
from app.queue import EVALUATE_TASK, EXPORT_TASK, GENERATE_TASK, INFERENCE_QUEUE, RECONCILE_TASK, TRAIN_TASK, broker_transport_options

settings = get_settings()

celery_app = Celery("tailor", broker=settings.broker_url, include=["worker.tasks"])
celery_app.conf.update(
    # One training job per worker process at a time: a GPU holds one job, and prefetching a
    # second message would only park it behind a multi-hour job while another worker idles.
    # A prefetch multiplier of 1 is not enough on its own: with early acks the running job's
    # message no longer counts, so the worker would reserve the next one. worker_disable_prefetch
    # (Celery >= 5.6, Redis only) fetches only when a process slot is free; the next wake-up stays
    # in Redis for whichever worker frees up first (tests/reliability/test_faults.py).
    worker_concurrency=1,
    worker_prefetch_multiplier=1,
    worker_disable_prefetch=True,
    # Acknowledge on receipt (acks_late off). The message is only a wake-up; if the worker dies
    # mid-job, the reconciler finds the stale heartbeat and re-queues the job, which resumes from
    # its checkpoint. With late acks, Redis would redeliver any job running longer than the
    # visibility_timeout to a second worker; harmless thanks to the conditional claim, but noisy.
    task_acks_late=False,
    task_reject_on_worker_lost=False,
    # Redis redelivers unacknowledged messages after this long; with early acks it only covers
    # the instant between delivery and ack. Kept generous so it can never cut into a long job.
    broker_transport_options=broker_transport_options(),
    broker_connection_retry_on_startup=True,
    broker_connection_max_retries=None,  # keep retrying while Redis restarts
    # No result backend: outcomes are written to the database by the task itself.
    task_ignore_result=True,
    task_default_queue="gpu",
    # A hard ceiling so a wedged job cannot hold a GPU forever; the soft limit lets the task
    # record a plain failure first.
    task_time_limit=settings.job_time_limit_seconds + 300,
    task_soft_time_limit=settings.job_time_limit_seconds,
    task_routes={
        TRAIN_TASK: {"queue": "gpu"},
        EVALUATE_TASK: {"queue": "gpu"},
        EXPORT_TASK: {"queue": "gpu"},
        RECONCILE_TASK: {"queue": "cpu"},
        GENERATE_TASK: {"queue": INFERENCE_QUEUE},
    },
    # The reconciler runs as a task on the cpu queue. A message that waited longer than one
    # interval (every worker busy training) expires instead of piling up: the next one will do.
    beat_schedule={
        "reconcile-jobs": {
            "task": RECONCILE_TASK,
            "schedule": settings.reconcile_interval_seconds,
            "options": {"queue": "cpu", "expires": settings.reconcile_interval_seconds},
        }
    },
    worker_send_task_events=False,
    timezone="UTC",
)


def default_worker_name() -> str:
    return f"tailor-{os.getpid()}@{socket.gethostname()}"


@setup_logging.connect
def _structured_logging(loglevel=None, **_kwargs) -> None:
    """Celery leaves logging to us: key=value (or JSON) lines with the job id on each."""
    from app.logs import configure_logging

    configure_logging(loglevel or "INFO", settings.log_format)


@worker_process_init.connect
def _fresh_connections_in_pool_child(**_kwargs) -> None:
    """A pool child is forked from the main process: never reuse its database connections."""
    from app.db import get_engine

    get_engine().dispose(close=False)


@worker_ready.connect
def _on_worker_ready(sender=None, **_kwargs) -> None:
    """Report this worker on the status board, and re-send what was lost while none ran."""
    from worker.presence import start_presence
    from worker.reconcile import reconcile_jobs

    queues = ",".join(sorted(q.name for q in sender.task_consumer.queues)) if sender is not None else ""
    start_presence(sender.hostname if sender is not None else default_worker_name(), queues)
    try:
        reconcile_jobs()
    except Exception:  # noqa: BLE001 - a failed reconcile must not stop the worker; beat retries
        logging.getLogger("tailor.worker").exception("Reconciliation at start-up failed")


@worker_shutdown.connect
def _on_worker_shutdown(**_kwargs) -> None:
    from worker.presence import stop_presence

    stop_presence()
