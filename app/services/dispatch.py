"""Fair dispatch: which queued job a worker takes when a wake-up reaches it.

Each job still sends one wake-up (a message carrying its id), but the message only says "a job is
waiting": the worker that receives it takes the job that is fairest to run next, not necessarily
the one named. Among the queued jobs of the message's queue, from workspaces below their running-jobs
quota, it takes the oldest job of the workspace that

  1. has the fewest jobs running now, then
  2. started a job least recently (never first) — round robin, which is what decides on a single
     worker, where every workspace has none running while it picks, then
  3. has the oldest waiting job.

So one workspace's 50 queued jobs do not hold another's first job behind all of them: it runs next.

The claim is the same conditional UPDATE as before (`jobs.claim_job`: queued -> running), so a job
is never run twice; if another worker claimed the chosen job first, the next in order is tried.
Nothing is lost either: each wake-up claims at most one job, and one that took another job than
its own sends its own job's wake-up again (after commit), so a waiting job always has a message
out, even if the job taken had none (a row queued behind the broker's back). A wake-up that finds
only jobs of workspaces at their running limit claims nothing; when a job of such a workspace ends
(succeeded, failed, cancelled: `jobs.finish_job`), `wake_held_back` sends a wake-up for the
workspace's oldest queued job after that commit, so the job held back starts at once (and the
reconciler still re-sends any wake-up older than its grace, as for lost messages). The cost is a
few extra wake-ups that find nothing to do once the queue is empty.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.config import Settings, get_settings
from app.models import Job, JobStatus
from app.services import jobs, quotas

NEVER = datetime.min.replace(tzinfo=UTC)


def fair_order(db: Session, settings: Settings, queue_name: str) -> list[int]:
    """The head job (oldest queued) of each workspace that may run one now, fairest first."""
    heads = dict(
        db.execute(
            select(Job.workspace_id, func.min(Job.id))
            .where(Job.status == JobStatus.queued, Job.cancel_requested.is_(False), Job.queue == queue_name)
            .group_by(Job.workspace_id)
        ).all()
    )
    if not heads:
        return []
    ids = list(heads)
    running = quotas.job_counts(db, ids, JobStatus.running)
    last_start = dict(
        db.execute(select(Job.workspace_id, func.max(Job.started_at)).where(Job.workspace_id.in_(ids)).group_by(Job.workspace_id)).all()
    )
    limits = quotas.effective_limits_of(db, settings, ids)

    def below_limit(ws: int) -> bool:
        limit = int(limits[ws]["max_running_jobs"])
        return not limit or running[ws] < limit

    def key(ws: int) -> tuple:
        started = last_start.get(ws)
        started = NEVER if started is None else (started if started.tzinfo else started.replace(tzinfo=UTC))
        return (running[ws], started, heads[ws])

    return [heads[ws] for ws in sorted(filter(below_limit, ids), key=key)]


def claim_next_job(
    db: Session, settings: Settings, worker_name: str, queue_name: str = "gpu", woken_for: int | None = None, rounds: int = 5
) -> int | None:
    """Claim the fairest queued job for this worker (flushed; the boundary commits). None when no
    job may run now. If the wake-up was for another job (`woken_for`) that still waits, its wake-up
    is sent again once this commits: a wake-up is never used up while its job waits, whether or not
    the job taken had a message of its own in this broker."""
    for _ in range(rounds):
        order = fair_order(db, settings, queue_name)
        if not order:
            return None
        for job_id in order:
            if jobs.claim_job(db, job_id, worker_name):
                if woken_for is not None and woken_for != job_id:
                    waiting = db.get(Job, woken_for, populate_existing=True)
                    if waiting is not None and waiting.status == JobStatus.queued:
                        jobs.send_wakeup(db, waiting)
                return job_id
    return None


def wake_held_back(db: Session, workspace_id: int, settings: Settings | None = None) -> list[int]:
    """A job of the workspace has ended (flushed, not yet committed): if the workspace has a
    running-jobs limit, wake a worker (after the commit) for its oldest queued job of each queue,
    which the limit may have held back. Returns the ids woken. Without a limit nothing was held
    back: every queued job still has its own wake-up out."""
    limit = int(quotas.effective_limits(db, settings or get_settings(), workspace_id)["max_running_jobs"])
    if not limit:
        return []
    heads = db.scalars(
        select(func.min(Job.id))
        .where(Job.workspace_id == workspace_id, Job.status == JobStatus.queued, Job.cancel_requested.is_(False))
        .group_by(Job.queue)
    ).all()
    for job_id in heads:
        waiting = db.get(Job, job_id)
        if waiting is not None:
            jobs.send_wakeup(db, waiting)
    return list(heads)
