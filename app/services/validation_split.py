"""The validation split a job gets (seeded, stratified by label where the task has labels) and
the leakage check: validation rows that also occur in training, exactly or nearly."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from app.domain.task_kinds import get_task_kind
from app.models import Dataset
from app.services.artifacts import ArtifactStore
from app.services.dataset_store import DatasetError
from app.services.duplicate_rows import near_duplicate_key
from app.services.stored_rows import iter_training_rows


def _validation_size(n: int, fraction: float) -> int:
    return min(max(1, round(n * fraction)), n - 1)


def split_train_validation(rows: list, fraction: float, seed: int, *, stratify_by: Callable[[Any], Any] | None = None) -> tuple[list, list]:
    """A seeded shuffle, then at least one validation row (and at least one training row).
    With stratify_by (e.g. the label of a row) every label keeps its share in both parts."""
    if len(rows) < 2:
        raise ValueError("At least 2 rows are needed to set a validation row aside.")
    if stratify_by is not None:
        return stratified_split(rows, [stratify_by(r) for r in rows], fraction, seed)
    shuffled = list(rows)
    random.Random(seed).shuffle(shuffled)
    n_validation = _validation_size(len(shuffled), fraction)
    return shuffled[n_validation:], shuffled[:n_validation]


def stratified_split(rows: list, labels: list, fraction: float, seed: int) -> tuple[list, list]:
    """Per label, the same share to validation (largest remainders); a label with one row stays in
    training. Always at least one validation row and at least one training row."""
    rng = random.Random(seed)
    groups: dict[Any, list] = {}
    for row, label in zip(rows, labels):
        groups.setdefault(label, []).append(row)
    target = _validation_size(len(rows), fraction)
    keys = sorted(groups, key=str)
    for key in keys:
        rng.shuffle(groups[key])
    exact = {k: len(groups[k]) * target / len(rows) for k in keys}
    take = {k: min(int(exact[k]), len(groups[k]) - 1) for k in keys}
    remaining = target - sum(take.values())
    for key in sorted(keys, key=lambda k: (-(exact[k] - int(exact[k])), str(k))):
        if remaining <= 0:
            break
        if take[key] < len(groups[key]) - 1:
            take[key] += 1
            remaining -= 1
    if sum(take.values()) == 0:  # every label has one row: fall back to one row of the largest group
        largest = max(keys, key=lambda k: len(groups[k]))
        take[largest] = 1
    train, validation = [], []
    for key in keys:
        validation.extend(groups[key][: take[key]])
        train.extend(groups[key][take[key] :])
    rng.shuffle(train)
    rng.shuffle(validation)
    return train, validation


@dataclass
class LeakageReport:
    exact: int
    near: int
    validation_rows: int
    examples: list[dict[str, Any]]

    @property
    def message(self) -> str | None:
        if not (self.exact or self.near):
            return None
        return (
            f"{self.exact + self.near} of {self.validation_rows} validation rows also appear in training "
            f"({self.exact} exactly, {self.near} nearly: same words ignoring case, spacing and punctuation). "
            "Validation scores will look better than they are; remove the duplicates from the file."
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "exact": self.exact,
            "near": self.near,
            "validation_rows": self.validation_rows,
            "examples": self.examples,
            "message": self.message,
        }


def leakage_check(
    train: list, validation: list, text_of: Callable[[Any], str] = lambda r: r if isinstance(r, str) else "\x1f".join(map(str, r))
) -> LeakageReport:
    """Validation rows that also occur in training, exactly or nearly."""
    exact_keys = {text_of(r) for r in train}
    near_keys = {near_duplicate_key(text_of(r)) for r in train}
    exact = near = 0
    examples: list[dict[str, Any]] = []
    for row in validation:
        text = text_of(row)
        if text in exact_keys:
            exact += 1
            kind = "exact"
        elif near_duplicate_key(text) in near_keys:
            near += 1
            kind = "near"
        else:
            continue
        if len(examples) < 3:
            examples.append({"kind": kind, "text": text[:200]})
    return LeakageReport(exact, near, len(validation), examples)


def split_check(
    store: ArtifactStore, dataset: Dataset, task: str, mapping: dict[str, Any], fraction: float = 0.1, seed: int = 0
) -> dict[str, Any]:
    """The validation split a job with this mapping would get (stratified by label for a task
    with labels), its sizes, and which validation rows also appear in training. The rows are the
    task's training rows (TaskKind.make_row), identified as the job identifies them."""
    kind = get_task_kind(task)
    errors = kind.mapping_errors(list(dataset.columns), mapping)
    if errors:
        raise DatasetError(next(iter(errors.values())))
    rows = [row for record in iter_training_rows(store, dataset) if (row := kind.make_row(record, mapping)) is not None]
    if len(rows) < 2:
        raise DatasetError(f"Fewer than 2 rows have a {kind.needed_nouns}; a validation row cannot be set aside.")
    stratify = kind.label_of if kind.has_labels else None
    train, validation = split_train_validation(rows, fraction, seed, stratify_by=stratify)
    leakage = leakage_check(train, validation, text_of=kind.identity)
    return {"train_rows": len(train), "validation_rows": len(validation), "stratified": stratify is not None, "leakage": leakage.as_dict()}
