"""Why a job request is refused: the column mapping, the usable rows, the labels, the validation
file and the base model's chat template, each as {form field: message} ({} when all is well)."""

from __future__ import annotations

from typing import Any

from app.domain.task_kinds import TaskKind, get_task_kind
from app.models import Adapter, Dataset
from app.services import column_checks
from app.services.artifacts import ArtifactStore
from app.services.prompt_preview import PreviewError, load_preview_tokenizer, render_prompt
from app.services.task_rows import iter_task_rows, task_rows

MIN_ROWS = 2


def mapping_errors(dataset: Dataset, kind: TaskKind, mapping: dict[str, Any]) -> dict[str, str]:
    """Roles left unmapped, columns the dataset lacks, roles that must differ (the registry's
    rules), then what the dataset's profile can already tell (empty columns, a single label)."""
    errors = kind.mapping_errors(list(dataset.columns), mapping)
    if not errors:
        errors.update(column_checks.column_problems(dataset, kind.key, mapping))
    return errors


def system_turn_error(model_location: str, rows: list[tuple], mapping: dict[str, Any]) -> dict[str, str]:
    """The base model's chat template refusing the system turn that a mapped system or context
    column adds (some templates raise on a system role): found at submit from the first row that
    has one, as the worker would render it, instead of failing the job in the worker."""
    row = next((r for r in rows if len(r) > 2 and r[2]), None)
    if row is None:
        return {}
    try:
        tokenizer = load_preview_tokenizer(model_location)
    except PreviewError:
        return {}  # no tokenizer.json to render with here; the worker reports any problem
    try:
        render_prompt(tokenizer, row[0], row[2])
    except PreviewError as exc:
        field = "system" if mapping.get("system") else "context"
        return {
            field: (
                f"{exc}. The model's chat template takes no system turn, which the mapped {field} column "
                "becomes. Leave that column out, or choose a base model whose template accepts one."
            )
        }
    return {}


def validation_file_errors(
    store: ArtifactStore, dataset: Dataset, validation_dataset: Dataset, task: str, mapping: dict[str, Any]
) -> dict[str, str]:
    """Why a dataset cannot serve as the validation file of this mapping ({} when it can)."""
    kind = get_task_kind(task)
    name = validation_dataset.name
    if validation_dataset.id == dataset.id:
        return {
            "validation_dataset": "The validation file must be another dataset than the training data. To check against "
            'rows of this one, choose "hold out a share" instead.'
        }
    for role, column in kind.mapped_columns(mapping):
        if column not in validation_dataset.columns:
            return {
                "validation_dataset": (
                    f"The validation file {name!r} has no column named {column!r} (mapped as the {kind.role(role).noun}). "
                    f"Its columns are: {', '.join(validation_dataset.columns)}. Upload a validation file with the same columns "
                    "as the training data."
                )
            }
    if not task_rows(store, validation_dataset, task, mapping):
        return {
            "validation_dataset": (
                f"No row of the validation file {name!r} has a {kind.needed_nouns}, so there is nothing to "
                "check against. Fill those columns or choose another file."
            )
        }
    return {}


def unseen_labels_error(
    store: ArtifactStore, validation_dataset: Dataset, task: str, mapping: dict[str, Any], train_labels: set[str]
) -> dict[str, str]:
    """A classifier's validation file with labels the training rows never show ({} when none)."""
    kind = get_task_kind(task)
    labels = {label for row in iter_task_rows(store, validation_dataset, task, mapping) if (label := kind.label_of(row)) is not None}
    unseen = labels - train_labels
    if not unseen:
        return {}
    shown = ", ".join(repr(label) for label in sorted(unseen)[:5]) + (f" and {len(unseen) - 5} more" if len(unseen) > 5 else "")
    return {
        "validation_dataset": (
            f"The validation file {validation_dataset.name!r} has labels the training data never shows: {shown}. A classifier cannot "
            "learn a class it has not seen, so those rows could only count as mistakes. Add training rows with those labels, "
            "or leave those rows out of the validation file."
        )
    }


def rows_errors(
    store: ArtifactStore,
    kind: TaskKind,
    rows: list[tuple],
    mapping: dict[str, Any],
    model_location: str,
    validation_dataset: Dataset | None = None,
) -> dict[str, str]:
    """Too few usable rows, a single label, labels the validation file adds, or a chat template
    refusing the system turn."""
    # With a validation file every row trains, so one usable row is enough.
    min_rows = 1 if validation_dataset is not None else MIN_ROWS
    if len(rows) < min_rows:
        return {
            kind.required_roles[-1].key: (
                f"Only {len(rows)} row(s) have a {kind.needed_nouns}; training needs at least {min_rows} "
                + ("(one to learn from, one to check against). " if min_rows > 1 else "")
                + "Check the column mapping."
            )
        }
    errors: dict[str, str] = {}
    if kind.rows_problem is not None and (problem := kind.rows_problem(rows)):
        errors[kind.required_roles[-1].key] = problem
    if kind.prompted:
        errors.update(system_turn_error(model_location, rows, mapping))
    if kind.has_labels:
        labels = {label for row in rows if (label := kind.label_of(row)) is not None}  # never None: the kind has labels
        label_field = kind.label_role.key if kind.label_role else kind.required_roles[-1].key
        if len(labels) < 2:
            errors[label_field] = (
                f"Every usable row has the label {next(iter(labels))!r}; a classifier needs at least two "
                "different labels. Choose another column or add examples."
            )
        elif validation_dataset is not None:
            errors.update(unseen_labels_error(store, validation_dataset, kind.key, mapping, labels))
    return errors


def params_errors(kind: TaskKind, params: dict[str, Any]) -> dict[str, str]:
    """Parameters this task kind cannot train with (a pairs loss on good/bad rows), as {param: message}."""
    problem = kind.params_problem(params) if kind.params_problem is not None else None
    return {"preference_loss": problem} if problem else {}


def parent_adapter_errors(kind: TaskKind | None, technique: str, base_model: str, parent: Adapter) -> dict[str, str]:
    """Why a job cannot continue from `parent` (already checked to be in the workspace), or {}."""
    if kind is None or kind.techniques is None:
        return {"parent_adapter_id": "Continuing from an adapter is offered for preference and feedback tasks."}
    if parent.base_model != base_model:
        return {
            "parent_adapter_id": (
                f"The adapter {parent.name!r} was trained on {parent.base_model}; choose that base model to continue from it."
            )
        }
    if not kind.allows_technique(parent.technique):
        return {
            "parent_adapter_id": (
                f"The adapter {parent.name!r} is a {parent.technique} adapter; preference tuning continues LoRA, QLoRA, DoRA "
                "or rsLoRA adapters."
            )
        }
    if parent.technique != technique:
        return {
            "parent_adapter_id": f"The adapter {parent.name!r} is a {parent.technique} adapter; choose {parent.technique} to continue it."
        }
    return {}
