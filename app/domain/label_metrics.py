"""Scores of predicted labels against the true ones (accuracy, macro-F1, confusion matrix) with
bootstrap intervals. Pure Python: the worker scores with them and the comparison page compares
adapters with them."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from app.domain.stats import Estimate, bootstrap_mean, bootstrap_statistic


def accuracy(predicted: Sequence[str], gold: Sequence[str]) -> float:
    return sum(p == g for p, g in zip(predicted, gold)) / len(gold) if gold else 0.0


def confusion_matrix(
    predicted: Sequence[str], gold: Sequence[str], labels: Sequence[str] | None = None
) -> tuple[list[str], list[list[int]]]:
    """(labels, matrix) with matrix[i][j] = rows of true label i predicted as label j."""
    labels = list(labels) if labels is not None else sorted(set(gold) | set(predicted))
    index = {label: i for i, label in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]
    for p, g in zip(predicted, gold):
        matrix[index[g]][index[p]] += 1
    return labels, matrix


def macro_f1(predicted: Sequence[str], gold: Sequence[str]) -> float:
    """Unweighted mean of per-label F1 over the labels that occur in gold or predictions."""
    labels, matrix = confusion_matrix(predicted, gold)
    scores = []
    for i, _ in enumerate(labels):
        tp = matrix[i][i]
        fp = sum(matrix[r][i] for r in range(len(labels))) - tp
        fn = sum(matrix[i]) - tp
        scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return sum(scores) / len(scores) if scores else 0.0


def majority_label(labels: Sequence[str]) -> str:
    """The most common label (ties: the first in sorted order), the baseline a classifier must beat."""
    counts = Counter(labels)
    return min(counts, key=lambda label: (-counts[label], label))


def macro_f1_estimate(predicted: Sequence[str], gold: Sequence[str], seed: int = 0) -> Estimate:
    return bootstrap_statistic(len(gold), lambda rows: macro_f1([predicted[i] for i in rows], [gold[i] for i in rows]), seed=seed)


def macro_f1_difference(predicted_a: Sequence[str], predicted_b: Sequence[str], gold: Sequence[str], seed: int = 0) -> Estimate:
    """macro-F1 of b minus that of a on the same rows (paired: both resampled with the same rows)."""

    def difference(rows: Sequence[int]) -> float:
        truth = [gold[i] for i in rows]
        return macro_f1([predicted_b[i] for i in rows], truth) - macro_f1([predicted_a[i] for i in rows], truth)

    return bootstrap_statistic(len(gold), difference, seed=seed)


def label_summary(predicted: Sequence[str], gold: Sequence[str], labels: Sequence[str]) -> dict:
    """{accuracy, macro_f1} as estimates with 95% intervals, and the confusion matrix."""
    names, matrix = confusion_matrix(predicted, gold, sorted(set(labels) | set(gold) | set(predicted)))
    return {
        "accuracy": bootstrap_mean([float(p == g) for p, g in zip(predicted, gold)]).as_dict(),
        "macro_f1": macro_f1_estimate(predicted, gold).as_dict(),
        "confusion": {"labels": names, "matrix": matrix},
    }
