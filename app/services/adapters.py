"""Adapters: where their files live and what a download serves."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.models import Adapter, AdapterDownload
from app.services import adapter_workflows
from app.services.artifacts import ArtifactStore

ZIP_NAME = "adapter.zip"


def adapter_storage_key(job_id: int) -> str:
    return f"adapters/job-{job_id}"


def adapter_zip_path(store: ArtifactStore, adapter: Adapter) -> Path:
    return store.path(f"{adapter.storage_key}/{ZIP_NAME}")


def download_filename(adapter: Adapter) -> str:
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in adapter.name.lower()).strip("-")
    return f"tailor-adapter-{adapter.id}-{safe[:60] or 'adapter'}.zip"


STATUSES = ("draft", "approved", "archived")


class AdapterError(ValueError):
    """An adapter request that cannot be done, worded for the person who asked."""


def adapters_for(db: Session, workspace_id: int, include_archived: bool = True) -> list[Adapter]:
    query = select(Adapter).where(Adapter.workspace_id == workspace_id)
    if not include_archived:
        query = query.where(Adapter.status != "archived")
    return list(db.scalars(query.order_by(Adapter.id.desc())))


def set_status(db: Session, adapter: Adapter, status: str) -> None:
    if status not in STATUSES:
        raise AdapterError(f"An adapter's status is one of: {', '.join(STATUSES)}.")
    adapter.status = status
    db.flush()


def record_download(db: Session, adapter: Adapter, user_id: int) -> None:
    db.add(AdapterDownload(adapter_id=adapter.id, user_id=user_id))
    db.flush()


def downloads_of(db: Session, adapter_id: int) -> list[AdapterDownload]:
    return list(db.scalars(select(AdapterDownload).where(AdapterDownload.adapter_id == adapter_id).order_by(AdapterDownload.id.desc())))


def download_counts(db: Session, workspace_id: int) -> dict[int, int]:
    rows = db.execute(
        select(AdapterDownload.adapter_id, func.count())
        .join(Adapter, Adapter.id == AdapterDownload.adapter_id)
        .where(Adapter.workspace_id == workspace_id)
        .group_by(AdapterDownload.adapter_id)
    ).all()
    return {adapter_id: count for adapter_id, count in rows}


def adapter_for_job(db: Session, job_id: int) -> Adapter | None:
    return db.scalar(select(Adapter).where(Adapter.job_id == job_id))


def request_evaluation(db: Session, adapter: Adapter) -> bool:
    """Mark the adapter's evaluation queued and wake a worker once that is committed; False (and
    nothing sent) while an evaluation is already queued or running."""
    from app import queue

    return adapter_workflows.request_and_wake(db, adapter, adapter_workflows.EVALUATION, queue.send_evaluate)
