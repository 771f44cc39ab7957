"""Re-send lost wake-ups and re-queue jobs whose worker died."""

from __future__ import annotations

import logging

from app.config import get_settings
from app.db import session_scope
from app.models import Job
from app.queue import send_train
from app.services import jobs

log = logging.getLogger("tailor.reconcile")


def reconcile_jobs(queued_grace_seconds: int | None = None) -> dict[str, list[int]]:
    settings = get_settings()
    grace = settings.reconcile_grace_seconds if queued_grace_seconds is None else queued_grace_seconds
    with session_scope() as db:
        queued, dead = jobs.jobs_needing_wakeup(db, settings, grace)
    for job_id in dead:
        log.warning("job %s: worker heartbeat is stale; re-queued", job_id)
    sent = []
    for job_id in sorted(set(queued) | set(dead)):
        with session_scope() as db:
            job = db.get(Job, job_id)
            send_train(job_id, job.queue if job else "gpu")
            jobs.mark_enqueued(db, job_id)
        sent.append(job_id)
    if sent:
        log.info("re-sent wake-ups for jobs %s", sent)
    return {"resent": sent, "requeued": dead}
