"""Intervals and plain-language comparisons over per-row scores (no numpy needed)."""

from __future__ import annotations

import random
from collections.abc import Sequence
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


def bootstrap_difference(a: Sequence[float], b: Sequence[float], resamples: int = 2000, confidence: float = 0.95, seed: int = 0) -> Estimate:
    """Mean of b - a over the same rows (paired), with a bootstrap interval."""
    if len(a) != len(b):
        raise ValueError("paired scores must cover the same rows")
    return bootstrap_mean([y - x for x, y in zip(a, b)], resamples, confidence, seed)


METRIC_NAMES = {"exact_match": "exact match", "token_f1": "token F1", "rouge_l": "ROUGE-L", "semantic_similarity": "meaning similarity",
                "accuracy": "accuracy", "macro_f1": "macro-F1"}


def compare_in_words(name_a: str, name_b: str, per_metric: dict[str, tuple[Sequence[float], Sequence[float]]]) -> str:
    """E.g. 'B is better than A on 2 of 3 metrics; the ROUGE-L difference is within noise.'"""
    better, worse, noise = [], [], []
    for metric, (a, b) in per_metric.items():
        diff = bootstrap_difference(a, b)
        label = METRIC_NAMES.get(metric, metric)
        if diff.low > 0:
            better.append(label)
        elif diff.high < 0:
            worse.append(label)
        else:
            noise.append(label)
    total = len(per_metric)
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
