"""Stored evaluations: where a worker writes an adapter's evaluation and how pages read it."""

from __future__ import annotations

import json

from app.services.artifacts import ArtifactStore


def evaluation_key(adapter_id: int) -> str:
    return f"evaluations/adapter-{adapter_id}.json"


def load_evaluation(store: ArtifactStore, adapter_id: int) -> dict | None:
    """{summary, rows: [{prompt, reference, base, adapter}], scores: {adapter|base: {metric: [..]}}} or None."""
    key = evaluation_key(adapter_id)
    if not store.exists(key):
        return None
    return json.loads(store.path(key).read_text())
