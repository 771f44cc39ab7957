"""The training form's preview: a dataset's first usable rows exactly as the chosen base model
will read them (the tokens themselves are app/services/prompt_preview.py's)."""

from __future__ import annotations

from itertools import islice
from typing import Any

from app.base_models import get_base_model
from app.config import Settings
from app.domain.task_kinds import UnknownTaskKind, get_task_kind
from app.models import Dataset
from app.services.artifacts import ArtifactStore
from app.services.job_checks import mapping_errors
from app.services.prompt_preview import PreviewError, PreviewExample, load_preview_tokenizer, preview_rows
from app.services.task_rows import dataset_labels, iter_task_rows


def preview_examples(
    settings: Settings,
    store: ArtifactStore,
    dataset: Dataset,
    *,
    task: str,
    mapping: dict[str, Any],
    base_model: str,
    max_length: int,
    validation_dataset: Dataset | None = None,
    count: int = 3,
) -> list[PreviewExample]:
    """The first `count` usable rows exactly as the model will see them, tokenized by the base
    model's own tokenizer; raises PreviewError with a message for people."""
    try:
        kind = get_task_kind(task)
    except UnknownTaskKind as exc:
        raise PreviewError(str(exc)) from None
    mapping = kind.clean_mapping(mapping)
    errors = mapping_errors(dataset, kind, mapping)
    if errors:
        raise PreviewError(next(iter(errors.values())))
    model = get_base_model(settings, base_model)
    if model is None or not model.available:
        raise PreviewError("Choose an installed base model to see rows as it will read them.")
    tokenizer = load_preview_tokenizer(model.location)
    rows = list(islice(iter_task_rows(store, dataset, task, mapping), count))
    if not rows:
        raise PreviewError("No row has every mapped column filled; check the column mapping.")
    label_names = None
    if kind.has_labels:  # class ids are the sorted labels of every row trained and validated on
        labels = dataset_labels(store, dataset, task, mapping)
        if validation_dataset is not None:
            labels = labels | dataset_labels(store, validation_dataset, task, mapping)
        label_names = sorted(labels)
    return preview_rows(tokenizer, task, rows, max_length, label_names)
