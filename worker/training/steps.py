"""One optimizer step: the loss of a batch, forward/backward of its micro-batches, the update."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from worker.training.chunked_loss import hidden_states_instead_of_logits, linear_cross_entropy_sum
from worker.training.data import IGNORE_INDEX
from worker.training.precision import FP32, Precision
from worker.training.progress import LoopState
from worker.training.spec import TrainingCallbacks


def to_device(batch: dict[str, torch.Tensor], device) -> dict[str, torch.Tensor]:
    return {key: value.to(device) for key, value in batch.items()}


def predicted_token_count(batch: dict[str, torch.Tensor]) -> int:
    """Label tokens that enter the loss (after the one-position shift); examples when classifying."""
    if batch["labels"].dim() == 1:
        return int(batch["labels"].numel())
    return int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())


def batch_loss_sum(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Summed cross-entropy: over response (or text) tokens, or over examples when classifying."""
    if batch["labels"].dim() == 1:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        return F.cross_entropy(logits.float(), batch["labels"], reduction="sum")
    inputs = (
        # Packed rows: no 2-D mask, so the model builds a block-diagonal one from the positions.
        {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"]}
        if "position_ids" in batch
        else {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    )
    # The output layer runs chunk by chunk over the labelled tokens (worker/training/chunked_loss.py):
    # the full [tokens x vocabulary] logits never exist. Models it cannot split keep the plain loss.
    with hidden_states_instead_of_logits(model) as head:
        out = model(**inputs, use_cache=False).logits
    # Prompt tuning and P-tuning put virtual tokens in front: keep the positions of real tokens.
    out = out[:, -batch["input_ids"].size(1) :, :]
    shifted, shifted_labels = out[:, :-1, :], batch["labels"][:, 1:].reshape(-1)
    if head is not None:
        return linear_cross_entropy_sum(shifted.reshape(-1, shifted.size(-1)), head.weight, shifted_labels, head.bias)
    return F.cross_entropy(shifted.float().reshape(-1, shifted.size(-1)), shifted_labels, ignore_index=IGNORE_INDEX, reduction="sum")


def micro_step(model, batch: dict[str, torch.Tensor], window_tokens: int, precision: Precision = FP32, device="cpu") -> float:
    """Forward + backward of one micro-batch, weighted by its share of the step's tokens."""
    with precision.autocast(device):
        loss_sum = batch_loss_sum(model, batch)
    loss = loss_sum / window_tokens
    (precision.scaler.scale(loss) if precision.scaler is not None else loss).backward()
    return float(loss_sum.detach())


def accumulate_gradients(
    model,
    batches: list[dict[str, torch.Tensor]],
    device,
    state: LoopState,
    callbacks: TrainingCallbacks,
    precision: Precision = FP32,
) -> float | None:
    """Forward/backward one optimizer step's micro-batches; its mean token loss, None if stopped.

    Each micro-batch is weighted by its share of the step's response tokens, so accumulating
    N micro-batches gives the same gradient as one batch holding all of them.
    """
    window_tokens = sum(predicted_token_count(batch) for batch in batches)
    loss_sum = 0.0
    for batch in batches:
        if callbacks.should_stop():
            return None
        loss_sum += micro_step(model, to_device(batch, device), window_tokens, precision, device)
        state.tokens_seen += int(batch["attention_mask"].sum())  # real tokens, not padding
    return loss_sum / window_tokens


def optimizer_step(
    optimizer, scheduler, trainable: list[torch.nn.Parameter], precision: Precision = FP32, after_step=None
) -> tuple[float, float]:
    """Clip, step and advance the schedule; returns (learning rate used, gradient norm).

    `after_step` runs between the update and clearing the gradients (AdaLoRA's rank
    allocation reads them there).
    """
    if precision.scaler is not None:
        precision.scaler.unscale_(optimizer)
    grad_norm = float(torch.nn.utils.clip_grad_norm_(trainable, max_norm=1.0))
    learning_rate = float(optimizer.param_groups[0]["lr"])
    if precision.scaler is not None:
        precision.scaler.step(optimizer)
        precision.scaler.update()
    else:
        optimizer.step()
    scheduler.step()
    if after_step is not None:
        after_step()
    optimizer.zero_grad(set_to_none=True)
    return learning_rate, grad_norm
