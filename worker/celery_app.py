"""The Celery app of the workers, with every setting explicit and explained.

Messages are only wake-ups carrying a job id: the job's row in the database is the truth, claimed
with a conditional UPDATE, so a duplicate or redelivered message can never run a job twice, and a
lost message is re-sent by the reconciler (worker start-up and every minute).
"""

from __future__ import annotations

import os
import socket

from celery import Celery
from celery.signals import worker_ready

from app.config import get_settings
from app.queue import RECONCILE_TASK, TRAIN_TASK, broker_transport_options

settings = get_settings()

celery_app = Celery("tailor", broker=settings.broker_url, include=["worker.tasks"])
celery_app.conf.update(
    # One training job per worker process at a time: a GPU holds one job, and prefetching a
    # second message would only park it behind a multi-hour job while another worker idles.
    worker_concurrency=1,
    worker_prefetch_multiplier=1,
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
    task_routes={TRAIN_TASK: {"queue": "gpu"}, RECONCILE_TASK: {"queue": "cpu"}},
    # The reconciler runs as a task on the cpu queue. A message that waited longer than one
    # interval (every worker busy training) expires instead of piling up: the next one will do.
    beat_schedule={"reconcile-jobs": {"task": RECONCILE_TASK, "schedule": settings.reconcile_interval_seconds,
                                      "options": {"queue": "cpu", "expires": settings.reconcile_interval_seconds}}},
    worker_hijack_root_logger=False,
    worker_send_task_events=False,
    timezone="UTC",
)


def default_worker_name() -> str:
    return f"tailor-{os.getpid()}@{socket.gethostname()}"


@worker_ready.connect
def _reconcile_on_start(sender=None, **_kwargs) -> None:
    """A worker that starts re-sends what was lost while none was running."""
    from worker.reconcile import reconcile_jobs

    try:
        reconcile_jobs()
    except Exception:  # noqa: BLE001 - a failed reconcile must not stop the worker; beat retries
        import logging

        logging.getLogger("tailor.worker").exception("Reconciliation at start-up failed")
