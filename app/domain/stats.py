"""Intervals and plain-language comparisons over per-row scores (no numpy needed)."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Estimate:
    value: float
    low: float
    high: float

    def as_dict(self) -> dict[str, float]:
        return {"value": self.value, "low": self.low, "high": self.high}


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    position = q * (len(sorted_values) - 1)
    lower = int(position)
    upper = min(lower + 1, len(sorted_values) - 1)
    return sorted_values[lower] + (sorted_values[upper] - sorted_values[lower]) * (position - lower)


def bootstrap_mean(values: Sequence[float], resamples: int = 2000, confidence: float = 0.95, seed: int = 0) -> Estimate:
    """The mean with a percentile bootstrap interval over rows."""
    n = len(values)
    if n == 0:
        return Estimate(float("nan"), float("nan"), float("nan"))
    rng = random.Random(seed)
    means = sorted(sum(values[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
    tail = (1 - confidence) / 2
    return Estimate(sum(values) / n, _percentile(means, tail), _percentile(means, 1 - tail))


def bootstrap_statistic(
    n: int, statistic: Callable[[Sequence[int]], float], resamples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> Estimate:
    """Any statistic of the rows (given as row indices, e.g. macro-F1) with a percentile bootstrap interval."""
    if n == 0:
        return Estimate(float("nan"), float("nan"), float("nan"))
    rng = random.Random(seed)
    values = sorted(statistic([rng.randrange(n) for _ in range(n)]) for _ in range(resamples))
    tail = (1 - confidence) / 2
    return Estimate(statistic(range(n)), _percentile(values, tail), _percentile(values, 1 - tail))


def bootstrap_ratio(
    numerators: Sequence[float], denominators: Sequence[float], resamples: int = 2000, confidence: float = 0.95, seed: int = 0
) -> Estimate:
    """sum(numerators) / sum(denominators) over rows with a bootstrap interval: a loss per token
    where rows hold different numbers of tokens (each row is resampled whole)."""

    def ratio(indices: Sequence[int]) -> float:
        return sum(numerators[i] for i in indices) / max(1e-12, sum(denominators[i] for i in indices))

    return bootstrap_statistic(len(numerators), ratio, resamples, confidence, seed)


def exponentiated(estimate: Estimate) -> Estimate:
    """exp() of an estimate and its interval (a percentile interval maps through any rising function):
    perplexity from a loss per token."""
    capped = [math.exp(min(v, 50.0)) for v in (estimate.value, estimate.low, estimate.high)]
    return Estimate(*capped)


def bootstrap_difference(
    a: Sequence[float], b: Sequence[float], resamples: int = 2000, confidence: float = 0.95, seed: int = 0
) -> Estimate:
    """Mean of b - a over the same rows (paired), with a bootstrap interval."""
    if len(a) != len(b):
        raise ValueError("paired scores must cover the same rows")
    return bootstrap_mean([y - x for x, y in zip(a, b)], resamples, confidence, seed)


METRIC_NAMES = {
    "exact_match": "exact match",
    "token_f1": "token F1",
    "rouge_l": "ROUGE-L",
    "semantic_similarity": "meaning similarity",
    "accuracy": "accuracy",
    "macro_f1": "macro-F1",
    "validation_loss": "validation loss",
    "perplexity": "perplexity",
}
# Metrics where a smaller value is the better one.
LOWER_IS_BETTER_METRICS = frozenset({"validation_loss", "perplexity"})


def compare_in_words(
    name_a: str, name_b: str, per_metric: dict[str, tuple[Sequence[float], Sequence[float]]], differences: dict[str, Estimate] | None = None
) -> str:
    """E.g. 'B is better than A on 2 of 3 metrics; the ROUGE-L difference is within noise.'

    per_metric holds paired per-row scores (a, b); `differences` adds metrics that are not a mean
    over rows (macro-F1), as b - a estimates computed by the caller.
    """
    estimates = {m: bootstrap_difference(a, b) for m, (a, b) in per_metric.items()} | dict(differences or {})
    better, worse, noise = [], [], []
    for metric, diff in estimates.items():
        if metric in LOWER_IS_BETTER_METRICS:  # a smaller loss is the improvement
            diff = Estimate(-diff.value, -diff.high, -diff.low)
        label = METRIC_NAMES.get(metric, metric)
        if diff.low > 0:
            better.append(label)
        elif diff.high < 0:
            worse.append(label)
        else:
            noise.append(label)
    total = len(estimates)
    parts = []
    if better:
        parts.append(f"{name_b} is better than {name_a} on {len(better)} of {total} metrics ({', '.join(better)})")
    if worse:
        parts.append(f"{name_b} is worse than {name_a} on {len(worse)} of {total} metrics ({', '.join(worse)})")
    if noise:
        verb = "difference is" if len(noise) == 1 else "differences are"
        parts.append(f"the {', '.join(noise)} {verb} within noise")
    if not better and not worse:
        return f"{name_a} and {name_b} cannot be told apart on these rows: every difference is within noise."
    sentence = "; ".join(parts)
    if sentence.startswith("the "):  # capitalise our own words, never an adapter's name
        sentence = "T" + sentence[1:]
    return sentence + "."
