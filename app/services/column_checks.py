"""Checks of a task's column mapping against a dataset: the registry's mapping errors (roles left
unmapped, columns the dataset lacks, roles that must differ) and what the stored profile can tell
already (a needed column empty in every row, a label column with one label)."""

from __future__ import annotations

from typing import Any

from app.domain.task_kinds import ColumnRole, get_task_kind
from app.models import Dataset
from app.services.label_counts import one_label_message


def empty_column_message(role: ColumnRole, column: str) -> str:
    return f"Column {column!r} is empty in every row. Choose the column that holds the {role.noun}s."


def column_problems(dataset: Dataset, task: str, mapping: dict[str, Any]) -> dict[str, str]:
    """Problems with a column mapping that the columns and the profile can already tell (role ->
    message; an unknown task raises UnknownTaskKind)."""
    kind = get_task_kind(task)
    problems = kind.mapping_errors(list(dataset.columns), mapping)
    by_name = {c["name"]: c for c in (dataset.profile or {}).get("columns", [])}
    for role in kind.required_roles:
        value = mapping.get(role.key)
        for column in value if isinstance(value, list) else [value] if value else []:
            if role.key not in problems and column in by_name and by_name[column]["filled"] == 0:
                problems[role.key] = empty_column_message(role, column)
    label = kind.label_role
    if label is not None and label.key not in problems and mapping.get(label.key) in by_name:
        profile = by_name[mapping[label.key]]
        if profile["top_values"] is not None and len(profile["top_values"]) == 1 and profile["distinct"] == 1:
            problems[label.key] = one_label_message(mapping[label.key], profile["top_values"][0][0])
    return problems
