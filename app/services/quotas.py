"""Per-workspace quotas: limits an instance administrator sets, what a workspace has used, and the
checks that refuse work beyond them with a plain sentence naming the limit.

Four limits (LIMITS below), each with a default in settings (TAILOR_QUOTA_*) and an optional
override per workspace (`workspace_quotas`, NULL = the default); 0 means unlimited:

- queued jobs: checked when a job is submitted (app/services/jobs.py `submit_job`), and checked
  again right before the insert with the workspace locked (`reserve_new_jobs`), so submits that
  arrive at the same moment cannot pass the limit together;
- running jobs: checked when a worker picks its next job (app/services/dispatch.py), so jobs
  beyond it wait in the queue instead of being refused;
- GPU hours per month: the running time of the workspace's work on workers in this calendar month
  (UTC) — for every training attempt in job_attempts and every run of an adapter's evaluation or
  export in workflow_runs, the part of [started_at, ended_at or now] that lies in this month,
  summed. Time on any worker counts, also a CPU one. An attempt whose worker died counts until the
  reconciler noticed it; a workflow run that never finished (its worker killed) counts for at most
  the tasks' hard time limit (TAILOR_JOB_TIME_LIMIT_SECONDS + 300 s). Checked when a job is submitted;
- requests per minute: playground (and serving) requests, counted in a moving one-minute window
  by the `limits` library on the app's Redis (`check_request_quota`).

Services flush; the boundary commits.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from app import queue
from app.config import Settings, get_settings
from app.models import Job, JobAttempt, JobStatus, WorkflowRun, Workspace, WorkspaceQuota, utcnow


@dataclass(frozen=True)
class QuotaLimit:
    key: str  # the column of workspace_quotas and, with "quota_", the setting
    label: str  # as it appears in refusals and on the pages
    whole: bool  # a whole number (jobs, requests) or hours

    def parse(self, value: Any) -> int | float | None:
        """A value from a form or JSON: None/'' (the default), or a number >= 0. ValueError otherwise."""
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        if isinstance(value, bool):
            raise ValueError(f"{self.label}: give a number (0 = unlimited), or leave it empty for the default.")
        try:
            number = float(str(value).strip()) if isinstance(value, str) else float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{self.label}: give a number (0 = unlimited), or leave it empty for the default.") from None
        if not math.isfinite(number) or number < 0 or number > 1_000_000_000:
            raise ValueError(f"{self.label}: give a number between 0 (unlimited) and 1000000000.")
        if self.whole:
            if number != int(number):
                raise ValueError(f"{self.label}: give a whole number.")
            return int(number)
        return number


LIMITS: dict[str, QuotaLimit] = {
    limit.key: limit
    for limit in (
        QuotaLimit("max_queued_jobs", "queued jobs", True),
        QuotaLimit("max_running_jobs", "running jobs", True),
        QuotaLimit("gpu_hours_per_month", "GPU hours per month", False),
        QuotaLimit("requests_per_minute", "requests per minute", True),
    )
}


class QuotaExceeded(Exception):
    """A refusal naming the limit, for the person; `status` is the HTTP status pages and API answer with."""

    status = 403

    def __init__(self, limit: str, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.limit = limit
        self.retry_after = retry_after


class RateLimited(QuotaExceeded):
    status = 429


def default_limits(settings: Settings) -> dict[str, int | float]:
    return {key: getattr(settings, f"quota_{key}") for key in LIMITS}


def effective_limits(db: Session, settings: Settings, workspace_id: int) -> dict[str, int | float]:
    """The workspace's limits: its overrides where set, else the defaults (0 = unlimited)."""
    return effective_limits_of(db, settings, [workspace_id])[workspace_id]


def effective_limits_of(db: Session, settings: Settings, workspace_ids: list[int]) -> dict[int, dict[str, int | float]]:
    defaults = default_limits(settings)
    rows = {q.workspace_id: q for q in db.scalars(select(WorkspaceQuota).where(WorkspaceQuota.workspace_id.in_(workspace_ids)))}
    result = {}
    for ws in workspace_ids:
        row = rows.get(ws)
        result[ws] = {key: v if row is not None and (v := getattr(row, key)) is not None else defaults[key] for key in LIMITS}
    return result


def overrides(db: Session, workspace_id: int) -> dict[str, int | float | None]:
    row = db.get(WorkspaceQuota, workspace_id)
    return {key: getattr(row, key) if row is not None else None for key in LIMITS}


def set_overrides(db: Session, workspace_id: int, values: dict[str, Any], by_user_id: int | None) -> dict[str, Any]:
    """Set the workspace's overrides (every key of LIMITS; None = back to the default). Values are
    parsed here (ValueError with a plain sentence). Returns {"before": …, "after": …} for the audit log."""
    unknown = set(values) - set(LIMITS)
    if unknown:
        raise ValueError(f"Unknown limits: {', '.join(sorted(unknown))}.")
    parsed = {key: LIMITS[key].parse(values.get(key)) for key in LIMITS}
    before = overrides(db, workspace_id)
    row = db.get(WorkspaceQuota, workspace_id)
    if row is None:
        row = WorkspaceQuota(workspace_id=workspace_id)
        db.add(row)
    for key, value in parsed.items():
        setattr(row, key, value)
    row.updated_at = utcnow()
    row.updated_by_id = by_user_id
    db.flush()
    return {"before": before, "after": parsed}


def month_start(now: datetime) -> datetime:
    return now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)  # SQLite gives naive UTC


def gpu_hours_this_month(
    db: Session, workspace_ids: list[int], now: datetime | None = None, settings: Settings | None = None
) -> dict[int, float]:
    """Hours of the workspaces' job attempts and workflow runs inside this calendar month (see the
    module docstring)."""
    now = now or utcnow()
    start = month_start(now)
    attempts = db.execute(
        select(Job.workspace_id, JobAttempt.started_at, JobAttempt.ended_at)
        .join(Job, Job.id == JobAttempt.job_id)
        .where(Job.workspace_id.in_(workspace_ids), JobAttempt.started_at < now)
        .where(or_(JobAttempt.ended_at.is_(None), JobAttempt.ended_at > start))
    ).all()
    runs = db.execute(
        select(WorkflowRun.workspace_id, WorkflowRun.started_at, WorkflowRun.ended_at)
        .where(WorkflowRun.workspace_id.in_(workspace_ids), WorkflowRun.started_at < now)
        .where(or_(WorkflowRun.ended_at.is_(None), WorkflowRun.ended_at > start))
    ).all()
    longest_task = timedelta(seconds=(settings or get_settings()).job_time_limit_seconds + 300)
    hours = dict.fromkeys(workspace_ids, 0.0)
    for rows, open_ends_at_most in ((attempts, None), (runs, longest_task)):
        for ws, began, ended in rows:
            began = _aware(began)
            if ended is not None:
                until = min(_aware(ended), now)
            else:
                until = now if open_ends_at_most is None else min(now, began + open_ends_at_most)
            seconds = (until - max(began, start)).total_seconds()
            hours[ws] += max(0.0, seconds) / 3600
    return hours


def job_counts(db: Session, workspace_ids: list[int], status: JobStatus) -> dict[int, int]:
    rows = db.execute(
        select(Job.workspace_id, func.count()).where(Job.workspace_id.in_(workspace_ids), Job.status == status).group_by(Job.workspace_id)
    ).all()
    counts = dict.fromkeys(workspace_ids, 0)
    counts.update({ws: n for ws, n in rows})
    return counts


def _refusal(limit: str, used: str, allowed: str, then: str) -> str:
    return f"This workspace's quota of {LIMITS[limit].label} is {allowed}, and it has {used}. {then}"


def check_new_jobs(db: Session, settings: Settings, workspace_id: int, count: int = 1) -> None:
    """Raise QuotaExceeded if the workspace may not queue `count` more jobs (queued jobs, GPU hours)."""
    limits = effective_limits(db, settings, workspace_id)
    queued_limit = int(limits["max_queued_jobs"])
    if queued_limit:
        queued = job_counts(db, [workspace_id], JobStatus.queued)[workspace_id]
        if queued + count > queued_limit:
            raise QuotaExceeded(
                "max_queued_jobs",
                _refusal(
                    "max_queued_jobs",
                    f"{queued} queued",
                    str(queued_limit),
                    "Wait for some to start or cancel some, or ask an administrator for a larger quota.",
                ),
            )
    hours_limit = float(limits["gpu_hours_per_month"])
    if hours_limit:
        used = gpu_hours_this_month(db, [workspace_id], settings=settings)[workspace_id]
        if used >= hours_limit:
            raise QuotaExceeded(
                "gpu_hours_per_month",
                _refusal(
                    "gpu_hours_per_month",
                    f"used {used:.2f} this month",
                    f"{hours_limit:g}",
                    "New jobs can start next month, or ask an administrator for a larger quota.",
                ),
            )


def lock_workspace(db: Session, workspace_id: int) -> None:
    """Hold the workspace until this transaction ends, so that a check of its counts and the rows it
    allows are one step: a second transaction of the same workspace waits here until the first has
    committed, then counts its rows. PostgreSQL: the workspace's row, FOR UPDATE (each later
    statement reads what committed before, READ COMMITTED). SQLite has one writer at a time: a
    write that changes nothing takes the database's write lock now (waiting out busy_timeout), so
    the counts read next are the latest and no other writer can commit before this one."""
    if db.get_bind().dialect.name == "sqlite":
        db.execute(update(Workspace).where(Workspace.id == workspace_id).values(id=Workspace.id))
    else:
        db.execute(select(Workspace.id).where(Workspace.id == workspace_id).with_for_update())


def reserve_new_jobs(db: Session, settings: Settings, workspace_id: int, count: int = 1) -> None:
    """`check_new_jobs` with the workspace locked until the transaction that adds the jobs commits:
    call it right before adding them (the lock is held for the rest of the transaction)."""
    lock_workspace(db, workspace_id)
    check_new_jobs(db, settings, workspace_id, count)


# --- requests per minute, on Redis with the `limits` library ---

REQUESTS_NAMESPACE = "tailor-requests"


@lru_cache
def _limiter(broker_url: str):
    from limits.storage import storage_from_string
    from limits.strategies import MovingWindowRateLimiter

    return MovingWindowRateLimiter(storage_from_string(queue.limits_storage_uri(broker_url)))


def _per_minute(amount: int):
    from limits import RateLimitItemPerMinute

    return RateLimitItemPerMinute(amount)


def check_request_quota(db: Session, workspace_id: int, settings: Settings | None = None) -> None:
    """Count one playground or serving request of the workspace; raise RateLimited (429, with the
    seconds to wait) when it has used its requests per minute. Serving routes call this too."""
    settings = settings or get_settings()
    limit = int(effective_limits(db, settings, workspace_id)["requests_per_minute"])
    if not limit:
        return
    limiter, item = _limiter(settings.broker_url), _per_minute(limit)
    if limiter.hit(item, REQUESTS_NAMESPACE, str(workspace_id)):
        return
    reset_at = limiter.get_window_stats(item, REQUESTS_NAMESPACE, str(workspace_id)).reset_time
    wait = max(1, math.ceil(reset_at - time.time()))
    raise RateLimited(
        "requests_per_minute",
        f"This workspace's quota of requests per minute is {limit}, and it has used them. Try again in {wait} seconds.",
        retry_after=wait,
    )


def requests_this_minute(settings: Settings, workspace_id: int, limit: int) -> int | None:
    """Requests counted in the current window (None when unlimited: nothing is counted then)."""
    if not limit:
        return None
    stats = _limiter(settings.broker_url).get_window_stats(_per_minute(limit), REQUESTS_NAMESPACE, str(workspace_id))
    return limit - stats.remaining


# --- what the pages and the API show ---


@dataclass
class QuotaUsage:
    workspace_id: int
    workspace_name: str
    limits: dict[str, int | float]
    overrides: dict[str, int | float | None]
    used: dict[str, int | float | None]

    def rows(self) -> list[dict[str, Any]]:
        return [
            {"key": k, "label": LIMITS[k].label, "limit": self.limits[k], "override": self.overrides[k], "used": self.used[k]}
            for k in LIMITS
        ]


def usage_of(db: Session, settings: Settings, workspace_ids: list[int] | None = None) -> list[QuotaUsage]:
    """Limits and usage per workspace (every workspace when None), by name."""
    query = select(Workspace).order_by(Workspace.name, Workspace.id)
    if workspace_ids is not None:
        query = query.where(Workspace.id.in_(workspace_ids))
    workspaces = list(db.scalars(query))
    ids = [w.id for w in workspaces]
    limits = effective_limits_of(db, settings, ids)
    queued, running = job_counts(db, ids, JobStatus.queued), job_counts(db, ids, JobStatus.running)
    hours = gpu_hours_this_month(db, ids, settings=settings)
    rows = {q.workspace_id: q for q in db.scalars(select(WorkspaceQuota).where(WorkspaceQuota.workspace_id.in_(ids)))}
    result = []
    for w in workspaces:
        row = rows.get(w.id)
        used: dict[str, int | float | None] = {
            "max_queued_jobs": queued[w.id],
            "max_running_jobs": running[w.id],
            "gpu_hours_per_month": round(hours[w.id], 3),
            "requests_per_minute": requests_this_minute(settings, w.id, int(limits[w.id]["requests_per_minute"])),
        }
        result.append(QuotaUsage(w.id, w.name, limits[w.id], {k: getattr(row, k) if row is not None else None for k in LIMITS}, used))
    return result
