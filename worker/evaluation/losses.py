"""Held-out loss per example, so validation loss and perplexity get bootstrap intervals over rows."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from worker.training.chunked_loss import hidden_states_instead_of_logits, linear_cross_entropy_per_token
from worker.training.data import IGNORE_INDEX, TokenizedExample, collate


@torch.no_grad()
def example_losses(model, examples: Sequence[TokenizedExample], pad_id: int, batch_size: int = 8) -> list[tuple[float, int]]:
    """(summed cross-entropy, predicted tokens) for each example, in order: the same loss as
    training's (response or text tokens after the one-position shift; one term per classified row)."""
    device = next(model.parameters()).device
    out: list[tuple[float, int]] = []
    for start in range(0, len(examples), batch_size):
        batch = {k: v.to(device) for k, v in collate(examples[start : start + batch_size], pad_id).items()}
        labels = batch["labels"]
        if labels.dim() == 1:  # classification: one label per row
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
            out.extend((float(loss), 1) for loss in F.cross_entropy(logits, labels, reduction="none"))
            continue
        # As in training, the output layer runs chunk by chunk: no [tokens x vocabulary] logits.
        with hidden_states_instead_of_logits(model) as head:
            out_states = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        out_states = out_states[:, -batch["input_ids"].size(1) :, :]  # virtual tokens of prompt tuning stay out
        shifted, targets = out_states[:, :-1, :], labels[:, 1:]
        flat = shifted.reshape(-1, shifted.size(-1))
        if head is not None:
            losses = linear_cross_entropy_per_token(flat, head.weight, targets.reshape(-1), head.bias).view(targets.shape)
        else:
            losses = F.cross_entropy(flat.float(), targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="none").view(targets.shape)
        counts = (targets != IGNORE_INDEX).sum(-1)
        out.extend((float(row_sum), int(n)) for row_sum, n in zip(losses.sum(-1), counts))
    return out
