"""Measured speed: what each finished job measured on its worker, for later estimates."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.domain.estimates import Measured
from app.models import Adapter, Job, ThroughputMeasurement, WorkerNode


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
    """A worker's measurements, newest first (the estimate takes the first that matches), with
    each job's time outside its steps (claim -> succeeded, less the worker's count of training
    time) and its automatic evaluation's time, rows and base-model share, when it has been evaluated."""
    rows = db.execute(
        select(ThroughputMeasurement, Job.started_at, Job.finished_at, Job.result, Adapter.metrics)
        .join(Job, Job.id == ThroughputMeasurement.job_id, isouter=True)
        .join(Adapter, Adapter.job_id == ThroughputMeasurement.job_id, isouter=True)
        .where(ThroughputMeasurement.worker_name == worker_name)
        .order_by(ThroughputMeasurement.created_at.desc(), ThroughputMeasurement.id.desc())
        .limit(limit)
    )
    out = []
    for r, started_at, finished_at, result, metrics in rows:
        setup = None
        if started_at is not None and finished_at is not None:
            # the job's own count of its training time: the steps and the held-out checks
            trained = float((result or {}).get("train_seconds") or r.train_seconds)
            setup = max(0.0, (finished_at - started_at).total_seconds() - trained)
        evaluation = (metrics or {}).get("evaluation") or {}
        seconds, rows_answered, base_seconds = evaluation.get("seconds"), evaluation.get("rows"), evaluation.get("base_seconds")
        out.append(
            Measured(
                r.base_model,
                r.technique,
                r.tokens_per_second,
                r.peak_memory_bytes,
                r.batch_size,
                r.max_length,
                setup_seconds=setup,
                evaluation_seconds=float(seconds) if isinstance(seconds, int | float) and rows_answered else None,
                evaluation_rows=int(rows_answered) if isinstance(rows_answered, int) and rows_answered > 0 else None,
                evaluation_base_seconds=float(base_seconds) if isinstance(base_seconds, int | float) else None,
            )
        )
    return tuple(out)
