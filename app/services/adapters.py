"""Adapters: where their files live and what a download serves."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import Adapter
from app.services.artifacts import LocalArtifactStore

ZIP_NAME = "adapter.zip"


def adapter_storage_key(job_id: int) -> str:
    return f"adapters/job-{job_id}"


def adapter_zip_path(store: LocalArtifactStore, adapter: Adapter) -> Path:
    return store.path(f"{adapter.storage_key}/{ZIP_NAME}")


def download_filename(adapter: Adapter) -> str:
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in adapter.name.lower()).strip("-")
    return f"tailor-adapter-{adapter.id}-{safe[:60] or 'adapter'}.zip"


def adapters_for(db: Session, workspace_id: int) -> list[Adapter]:
    return list(db.scalars(select(Adapter).where(Adapter.workspace_id == workspace_id).order_by(Adapter.id.desc())))


def adapter_for_job(db: Session, job_id: int) -> Adapter | None:
    return db.scalar(select(Adapter).where(Adapter.job_id == job_id))


def request_evaluation(db: Session, adapter: Adapter) -> None:
    """Mark the adapter's evaluation queued and wake a worker for it."""
    from app import queue

    adapter.metrics = {**(adapter.metrics or {}), "evaluation_state": "queued", "evaluation_error": None}
    db.commit()
    try:
        queue.send_evaluate(adapter.id)
    except Exception:  # noqa: BLE001
        adapter.metrics = {**adapter.metrics, "evaluation_state": "failed",
                           "evaluation_error": "The job queue could not be reached; try again in a moment."}
        db.commit()
