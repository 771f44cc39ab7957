"""Per-row scores for generated answers and predicted labels. Pure Python, no torch, so the
numbers are easy to check by hand (the tests do)."""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from collections.abc import Sequence

# Label scores live with the web's services, which compare adapters with them too.
from app.domain.label_metrics import accuracy, confusion_matrix, macro_f1  # noqa: F401

_PUNCTUATION = set(string.punctuation) | {"“", "”", "‘", "’", "…", "–", "—"}
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalise_answer(text: str) -> str:
    """Lower case, no punctuation, no articles, single spaces (the SQuAD convention)."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def tokens(text: str) -> list[str]:
    return normalise_answer(text).split()


def exact_match(prediction: str, reference: str) -> float:
    return float(normalise_answer(prediction) == normalise_answer(reference))


def token_f1(prediction: str, reference: str) -> float:
    """Harmonic mean of token precision and recall (bag of words, with repeats)."""
    pred, ref = tokens(prediction), tokens(reference)
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def _lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    if len(a) < len(b):
        a, b = b, a
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b, start=1):
            current.append(previous[j - 1] + 1 if x == y else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure: longest common token subsequence against both lengths."""
    pred, ref = tokens(prediction), tokens(reference)
    if not pred or not ref:
        return float(pred == ref)
    lcs = _lcs_length(pred, ref)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(pred), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


GENERATION_METRICS = {"exact_match": exact_match, "token_f1": token_f1, "rouge_l": rouge_l}


def score_generations(predictions: Sequence[str], references: Sequence[str]) -> dict[str, list[float]]:
    """Per-row scores for every generation metric, ready for bootstrap intervals."""
    return {name: [fn(p, r) for p, r in zip(predictions, references)] for name, fn in GENERATION_METRICS.items()}
