"""A job's attempts: one is opened when a worker claims the job and closed when the job ends or
the reconciler finds its worker dead. A job whose worker died three times in a row without
getting any further (an out-of-memory kill at the same step, a crash while loading the model) is
stopped as failed instead of being handed to the next worker forever."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import JobAttempt, utcnow

LOST = "lost"
STRIKES = 3


def open_attempt(db: Session, job_id: int, number: int, worker_name: str, started_step: int) -> JobAttempt:
    attempt = JobAttempt(job_id=job_id, number=number, worker_name=worker_name, started_step=started_step, started_at=utcnow())
    db.add(attempt)
    db.flush()
    return attempt


def attempts_for(db: Session, job_id: int) -> list[JobAttempt]:
    return list(db.scalars(select(JobAttempt).where(JobAttempt.job_id == job_id).order_by(JobAttempt.number, JobAttempt.id)))


def close_attempt(
    db: Session, job_id: int, outcome: str, *, ended_step: int | None, reason: str | None = None, at: datetime | None = None
) -> list[JobAttempt]:
    """Close the job's open attempt (if any) and return the whole history."""
    history = attempts_for(db, job_id)
    current = next((a for a in reversed(history) if a.ended_at is None), None)
    if current is not None:
        current.ended_at = at or utcnow()
        current.ended_step = ended_step
        current.outcome = outcome
        current.reason = reason
        db.flush()
    return history


def lost_the_same_way(history: list[JobAttempt]) -> bool:
    """True when the last STRIKES attempts all lost their worker and the later ones got no further
    than the first of them: trying again would only end the same way."""
    last = history[-STRIKES:]
    if len(last) < STRIKES or any(a.outcome != LOST for a in last):
        return False
    reached = last[0].ended_step or 0
    return all((a.ended_step or 0) <= reached for a in last[1:])


def gave_up_reason(history: list[JobAttempt]) -> str:
    step = history[-1].ended_step or 0
    where = f"at step {step:,}" if step else "before its first training step"
    return (
        f"The worker running this job stopped {STRIKES} times in a row {where}, without getting further, so Tailor stopped "
        "retrying it. This usually means the worker ran out of memory (the system killed it): lower the batch size or the "
        "maximum length, pick a smaller base model or a 4-bit technique, or run it on a machine with more memory. "
        "The worker logs name the cause."
    )
