"""Measured speed: what each finished job measured on its worker, for later estimates."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.domain.estimates import Measured
from app.models import Job, ThroughputMeasurement, WorkerNode


def record_job_throughput(
    db: Session, job: Job, worker_name: str, *, tokens: int, train_seconds: float, eval_seconds: float, peak_memory_bytes: int
) -> ThroughputMeasurement | None:
    """Keep a finished job's real tokens/s (held-out checks left out) and peak memory; None when
    the run trained too briefly to say anything."""
    seconds = train_seconds - eval_seconds
    if tokens <= 0 or seconds <= 0:
        return None
    worker = db.scalar(select(WorkerNode).where(WorkerNode.name == worker_name))
    params = job.params or {}
    row = ThroughputMeasurement(
        job_id=job.id,
        worker_name=worker_name,
        device=worker.device if worker is not None else "unknown",
        base_model=job.base_model,
        technique=job.technique,
        batch_size=int(params.get("batch_size", 8)),
        max_length=int(params.get("max_length", 256)),
        tokens=int(tokens),
        train_seconds=float(seconds),
        tokens_per_second=float(tokens / seconds),
        peak_memory_bytes=int(peak_memory_bytes),
    )
    db.add(row)
    db.flush()
    return row


def measurements_of(db: Session, worker_name: str, limit: int = 200) -> tuple[Measured, ...]:
    """A worker's measurements, newest first (the estimate takes the first that matches)."""
    rows = db.scalars(
        select(ThroughputMeasurement)
        .where(ThroughputMeasurement.worker_name == worker_name)
        .order_by(ThroughputMeasurement.created_at.desc(), ThroughputMeasurement.id.desc())
        .limit(limit)
    )
    return tuple(Measured(r.base_model, r.technique, r.tokens_per_second, r.peak_memory_bytes, r.batch_size, r.max_length) for r in rows)
