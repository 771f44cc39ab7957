"""A job's rows: a dataset's records as its task kind's training rows (TaskKind.make_row), the
split into training and validation rows with its leakage check, and a dataset's label set."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from app.domain.task_kinds import get_task_kind
from app.models import Dataset
from app.services import dataset_store, stored_rows, validation_split
from app.services.artifacts import ArtifactStore


def iter_task_rows(store: ArtifactStore, dataset: Dataset, task: str, mapping: dict[str, Any]) -> Iterator[tuple]:
    """task_rows, one at a time (a preview needs only the first few)."""
    kind = get_task_kind(task)
    for record in stored_rows.iter_training_rows(store, dataset):
        row = kind.make_row(record, mapping)
        if row is not None:
            yield row


def skipped_rows(store: ArtifactStore, dataset: Dataset, task: str, mapping: dict[str, Any]) -> dict[str, int]:
    """Why records yield no training row, counted ({'chosen and rejected identical': 3, ...}); only
    for task kinds that name their reasons (TaskKind.skip_reason). Never raises on odd cells."""
    kind = get_task_kind(task)
    if kind.skip_reason is None:
        return {}
    counts: dict[str, int] = {}
    for record in stored_rows.iter_training_rows(store, dataset):
        reason = kind.skip_reason(record, mapping)
        if reason is not None:
            counts[reason] = counts.get(reason, 0) + 1
    return counts


def task_rows(store: ArtifactStore, dataset: Dataset, task: str, mapping: dict[str, Any]) -> list[tuple]:
    """The usable rows of a task from the dataset's training copy (rows missing a needed value are
    skipped), in the shape of the task kind's row_shape."""
    return list(iter_task_rows(store, dataset, task, mapping))


def split_task_rows(rows: list[tuple], task: str, fraction: float, seed: int) -> tuple[list, list]:
    """Held-out split; a task with labels keeps every label's share in both parts."""
    kind = get_task_kind(task)
    return validation_split.split_train_validation(rows, fraction, seed, stratify_by=kind.label_of if kind.has_labels else None)


def train_validation_rows(
    store: ArtifactStore,
    dataset: Dataset,
    task: str,
    mapping: dict[str, Any],
    *,
    fraction: float,
    seed: int,
    validation_dataset: Dataset | None = None,
    rows: list[tuple] | None = None,
) -> tuple[list, list, dict[str, Any]]:
    """The rows a job trains and validates on, and a summary of where the validation rows come from.

    With a validation file every usable row of the dataset trains and the file's usable rows
    validate; otherwise a seeded share is held out (stratified by label for tasks with labels).
    The summary carries the counts and the leakage check (validation rows also in training).
    """
    kind = get_task_kind(task)
    rows = task_rows(store, dataset, task, mapping) if rows is None else rows
    if validation_dataset is not None:
        train, validation = list(rows), task_rows(store, validation_dataset, task, mapping)
        summary: dict[str, Any] = {
            "source": "file",
            "dataset_id": validation_dataset.id,
            "dataset_name": validation_dataset.name,
            "dataset_sha256": validation_dataset.sha256,
        }
    else:
        train, validation = split_task_rows(rows, task, fraction, seed)
        summary = {"source": "split", "fraction": fraction, "stratified": kind.has_labels}
    # What identifies a row (the prompt or the text), as in the split check.
    leakage = validation_split.leakage_check(
        train, validation, text_of=lambda row: kind.identity(row) if isinstance(row, (tuple, list)) else str(row)
    )
    summary.update({"rows": len(validation), "train_rows": len(train), "leakage": leakage.as_dict()})
    return train, validation, summary


def describe_validation(summary: dict[str, Any] | None) -> str | None:
    """'file support-holdout, 40 rows' or '10% split, 22 rows' (None when not known)."""
    if not summary:
        return None
    rows = summary.get("rows")
    count = f", {rows:,} row{'s' if rows != 1 else ''}" if isinstance(rows, int) else ""
    if summary.get("source") == "file":
        return f"file {summary.get('dataset_name')}{count}"
    fraction = float(summary.get("fraction") or 0)
    stratified = ", stratified by label" if summary.get("stratified") else ""
    return f"{fraction:.0%} split{stratified}{count}"


_LABELS_CACHE: dict[tuple, frozenset[str]] = {}


def dataset_labels(store: ArtifactStore, dataset: Dataset, task: str, mapping: dict[str, Any]) -> frozenset[str]:
    """The labels of a dataset's usable rows of a task with labels; remembered per file and columns
    (stored files never change), so a form redrawn on every change does not re-read a big file."""
    kind = get_task_kind(task)
    key = (dataset.id, dataset.sha256, dataset_store.training_key(dataset), kind.key, tuple(kind.mapped_columns(mapping)))
    if key not in _LABELS_CACHE:
        if len(_LABELS_CACHE) >= 64:
            _LABELS_CACHE.pop(next(iter(_LABELS_CACHE)))
        _LABELS_CACHE[key] = frozenset(str(kind.label_of(r)) for r in iter_task_rows(store, dataset, task, mapping))
    return _LABELS_CACHE[key]
