"""The labels of a classification dataset: how often each occurs, and what stops training."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.models import Dataset
from app.services.artifacts import ArtifactStore
from app.services.stored_rows import iter_rows


@dataclass
class LabelDistribution:
    counts: list[tuple[str, int]]  # most frequent first
    empty: int
    warnings: list[str]
    problems: list[str]  # stop training: fix these first

    def as_dict(self) -> dict[str, Any]:
        return {
            "counts": [{"label": label, "count": n} for label, n in self.counts],
            "empty": self.empty,
            "warnings": self.warnings,
            "problems": self.problems,
        }


RARE_LABEL_MIN = 5


def one_label_message(label_column: str, label: str) -> str:
    return (
        f"Column {label_column!r} has only one label ({label!r}); a classifier needs at least two. "
        "Add examples of the other classes, or choose another column."
    )


def label_distribution(store: ArtifactStore, dataset: Dataset, label_column: str, rare_below: int = RARE_LABEL_MIN) -> LabelDistribution:
    """How often each label occurs, with warnings for rare labels and problems that stop training."""
    if label_column not in dataset.columns:
        return LabelDistribution([], 0, [], [f"The dataset has no column named {label_column!r}."])
    counts: dict[str, int] = {}
    empty = 0
    for row in iter_rows(store, dataset):
        value = (row.get(label_column) or "").strip()
        if not value:
            empty += 1
            continue
        counts[value] = counts.get(value, 0) + 1
        if len(counts) > 10_000:
            return LabelDistribution(
                [],
                empty,
                [],
                [
                    f"Column {label_column!r} has more than 10,000 different values; it looks like "
                    "free text, not a label. Choose the column that holds the category."
                ],
            )
    return summarise_labels(counts, empty, label_column, rare_below)


def summarise_labels(counts: dict[str, int], empty: int, label_column: str, rare_below: int = RARE_LABEL_MIN) -> LabelDistribution:
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    warnings: list[str] = []
    problems: list[str] = []
    total = sum(counts.values())
    if not ordered:
        problems.append(
            f"Column {label_column!r} is empty in every row, so there is nothing to learn. Choose the column that holds the labels."
        )
    elif len(ordered) == 1:
        problems.append(one_label_message(label_column, ordered[0][0]))
    else:
        rare = [label for label, n in ordered if n < rare_below]
        if rare:
            shown = ", ".join(repr(label) for label in rare[:10]) + (f" and {len(rare) - 10} more" if len(rare) > 10 else "")
            warnings.append(
                f"{len(rare)} label(s) have fewer than {rare_below} examples ({shown}); the model will hardly learn them. "
                "Add examples, or merge them into a broader label."
            )
        if len(ordered) > 100:
            warnings.append(f"Column {label_column!r} has {len(ordered)} different labels; check that it really holds categories.")
        if ordered[0][1] / total > 0.9:
            warnings.append(
                f"{ordered[0][1] / total:.0%} of the rows have the label {ordered[0][0]!r}; a model can score well by always "
                "answering it. Add examples of the other labels if you can."
            )
    if empty:
        warnings.append(f"{empty:,} row(s) have no label; they are left out of training.")
    return LabelDistribution(ordered, empty, warnings, problems)
