"""Measuring a model on held-out examples: mean token loss, and accuracy for classifiers."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from worker.training.data import TokenizedExample, collate, length_grouped_batches
from worker.training.precision import FP32, Precision
from worker.training.steps import batch_loss_sum, predicted_token_count, to_device


@torch.no_grad()
def evaluate_loss(
    model,
    examples: Sequence[TokenizedExample],
    batch_size: int,
    pad_id: int,
    device,
    precision: Precision = FP32,
) -> float | None:
    """Mean cross-entropy per response token over all examples (None when there are none)."""
    if not examples:
        return None
    was_training = model.training
    model.eval()
    total_loss, total_tokens = 0.0, 0
    # Evaluation must not move the training's random generators (dropout, shuffles).
    rng_state = torch.random.get_rng_state()
    for indices in length_grouped_batches([len(e) for e in examples], batch_size, seed=0):
        batch = to_device(collate([examples[i] for i in indices], pad_id), device)
        with precision.autocast(device):
            total_loss += float(batch_loss_sum(model, batch))
        total_tokens += predicted_token_count(batch)
    torch.random.set_rng_state(rng_state)
    if was_training:
        model.train()
    return total_loss / max(1, total_tokens)


@torch.no_grad()
def evaluate_accuracy(model, examples: Sequence[TokenizedExample], batch_size: int, pad_id: int, device) -> float | None:
    """Share of classification examples whose top class is right (None when there are none)."""
    if not examples or examples[0].label is None:
        return None
    was_training = model.training
    model.eval()
    right = 0
    for start in range(0, len(examples), batch_size):
        batch = to_device(collate(examples[start : start + batch_size], pad_id), device)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        right += int((logits.argmax(-1) == batch["labels"]).sum())
    if was_training:
        model.train()
    return right / len(examples)
