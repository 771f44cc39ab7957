"""Classification scoring: the adapter's predicted label for each held-out row, next to the
majority-class baseline (a fresh classification head has no meaningful "base model" answer)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from app.domain.label_metrics import label_summary, majority_label
from worker.training.data import collate, pad_token_id, tokenize_classification


@torch.no_grad()
def predict_labels(
    model, tokenizer, rows: Sequence, label_names: Sequence[str], max_length: int, batch_size: int = 16
) -> tuple[list[str], list[str], list[str]]:
    """(texts, true labels, predicted labels) for the (text, label) rows the model can read."""
    tokenized = tokenize_classification(tokenizer, rows, max_length, label_names)
    dropped = set(tokenized.dropped_rows)
    kept = [row for i, row in enumerate(rows) if i not in dropped]
    device = next(model.parameters()).device
    predicted: list[str] = []
    for start in range(0, len(tokenized.examples), batch_size):
        batch = collate(tokenized.examples[start : start + batch_size], pad_token_id(tokenizer))
        logits = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)).logits
        predicted.extend(label_names[int(i)] for i in logits.argmax(-1))
    return [str(r[0]) for r in kept], [str(r[1]) for r in kept], predicted


def score_labels(
    texts: Sequence[str], gold: Sequence[str], predicted: Sequence[str], train_labels: Sequence[str], label_names: Sequence[str]
) -> dict:
    """Summary (accuracy and macro-F1 with intervals, confusion matrix, the baseline), per-row
    scores and predictions, in the shape of the stored evaluation."""
    baseline = majority_label(train_labels)
    base_predicted = [baseline] * len(gold)
    adapter = label_summary(predicted, gold, label_names)
    base = label_summary(base_predicted, gold, label_names)
    correct = lambda preds: [float(p == g) for p, g in zip(preds, gold)]  # noqa: E731
    return {
        "summary": {
            "rows": len(gold),
            "task": "classification",
            "adapter": {"accuracy": adapter["accuracy"], "macro_f1": adapter["macro_f1"]},
            "base": {"accuracy": base["accuracy"], "macro_f1": base["macro_f1"]},
            "base_kind": "majority_class",
            "baseline_label": baseline,
            "confusion": adapter["confusion"],
        },
        "rows": [{"prompt": t, "reference": g, "base": baseline, "adapter": p} for t, g, p in zip(texts, gold, predicted)],
        "scores": {"adapter": {"accuracy": correct(predicted)}, "base": {"accuracy": correct(base_predicted)}},
        "predictions": {"gold": list(gold), "adapter": list(predicted), "base": base_predicted},
    }
