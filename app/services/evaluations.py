"""Stored evaluations: where a worker writes an adapter's evaluation and how pages read it."""

from __future__ import annotations

import json

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import Adapter
from app.services.artifacts import ArtifactStore


def evaluation_key(adapter_id: int) -> str:
    return f"evaluations/adapter-{adapter_id}.json"


def load_evaluation(store: ArtifactStore, adapter_id: int) -> dict | None:
    """{summary, rows: [{prompt, reference, base, adapter}], scores: {adapter|base: {metric: [..]}}} or None."""
    key = evaluation_key(adapter_id)
    if not store.exists(key):
        return None
    return json.loads(store.path(key).read_text())


def record_summary(db: Session, adapter_id: int, summary: dict) -> Adapter | None:
    """Put the evaluation's summary into the adapter's metrics. Once the adapter exists this is the
    only writer of its metrics (workflow states have their own columns) and its evaluation state
    keeps two from running at once; the row lock (PostgreSQL) guards the read-modify-write anyway."""
    adapter = db.scalar(select(Adapter).where(Adapter.id == adapter_id).with_for_update().execution_options(populate_existing=True))
    if adapter is not None:
        adapter.metrics = {**(adapter.metrics or {}), "evaluation": summary}
        db.flush()
    return adapter
