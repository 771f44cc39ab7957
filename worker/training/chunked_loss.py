"""The causal-LM loss without the full [tokens x vocabulary] logits tensor.

A plain causal-LM step builds logits for every position (49k floats per token for SmolLM2),
copies them to fp32, takes their log-softmax and, in the backward pass, a gradient of the same
size: several times tokens x vocab x 4 bytes. Here the model returns its last hidden states
instead (its output layer is bypassed for the forward call, `hidden_states_instead_of_logits`),
only the positions that carry a label are kept, and the output layer + cross-entropy run over
chunks of those tokens (`linear_cross_entropy_sum`). The forward pass of each chunk also works
out that chunk's gradients (softmax - one-hot, times the hidden states or the weight), so the
backward pass only scales what was kept: at most one chunk's logits exist at any time, and the
output layer's matrix product is not recomputed. This is the approach of Liger Kernel's fused
linear cross-entropy and torchtune's chunked loss; on CUDA with `liger-kernel` installed its
Triton kernel is used instead.

Models whose output layer is more than a matrix product (logit soft-capping, logit scaling, an
output layer wrapped by an adapter) keep the plain loss: `hidden_states_instead_of_logits`
yields None for them.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100  # the same as worker.training.data.IGNORE_INDEX (kept import-free for gpu_check)
# Tokens per chunk: chunk x vocab fp32 logits of about 32 MB (8M values), at least 16 tokens.
CHUNK_VALUES = 2**23
# config.json keys that change the logits after the output layer's matrix product.
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_logits_scale")


def chunk_tokens_for(vocab: int) -> int:
    return max(16, CHUNK_VALUES // max(1, vocab))


class _ChunkedLinearCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy of `hidden @ weight.T (+ bias)` against `targets`, chunk by chunk.

    All targets are real labels (the caller dropped the ignored positions). The gradients are
    computed during the forward pass (d loss / d logits = softmax - one_hot per chunk) and
    only scaled by the incoming gradient in backward.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk, grads_wanted):
        # forward() of an autograd.Function runs with gradients off: the caller says whether
        # gradients will be asked for (not under torch.no_grad, as in held-out checks).
        want_hidden = grads_wanted and ctx.needs_input_grad[0]
        want_weight = grads_wanted and ctx.needs_input_grad[1]
        want_bias = grads_wanted and bias is not None and ctx.needs_input_grad[2]
        grad_hidden: Any = torch.empty_like(hidden) if want_hidden else None
        grad_weight: Any = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if want_weight else None
        grad_bias: Any = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device) if want_bias else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, hidden.size(0), chunk):
            h = hidden[start : start + chunk]
            t = targets[start : start + chunk]
            logits = F.linear(h, weight, bias).float()
            lse = torch.logsumexp(logits, dim=-1)
            total += (lse - logits.gather(1, t.unsqueeze(1)).squeeze(1)).sum()
            if not (want_hidden or want_weight or want_bias):
                continue
            grad_logits = logits.sub_(lse.unsqueeze(1)).exp_()  # softmax, in place of the logits
            grad_logits[torch.arange(t.size(0), device=t.device), t] -= 1.0
            if want_hidden:
                grad_hidden[start : start + chunk] = grad_logits.to(h.dtype) @ weight.to(h.dtype)
            if want_weight:
                grad_weight += (grad_logits.t().to(h.dtype) @ h).float()
            if want_bias:
                grad_bias += grad_logits.sum(0)
        ctx.save_for_backward(
            *(g for g in (grad_hidden, grad_weight, grad_bias) if g is not None),
        )
        ctx.kept = (want_hidden, want_weight, want_bias)
        ctx.dtypes = (hidden.dtype, weight.dtype, bias.dtype if bias is not None else None)
        return total

    @staticmethod
    def backward(ctx, grad_total):
        saved = iter(ctx.saved_tensors)
        grads = []
        for kept, dtype in zip(ctx.kept, ctx.dtypes):
            grads.append((next(saved) * grad_total).to(dtype) if kept else None)
        return grads[0], grads[1], grads[2], None, None, None


def _liger_available(device: torch.device) -> bool:
    return device.type == "cuda" and importlib.util.find_spec("liger_kernel") is not None


def linear_cross_entropy_sum(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    chunk_tokens: int | None = None,
    use_liger: bool | None = None,
) -> torch.Tensor:
    """sum over labelled tokens of cross_entropy(hidden @ weight.T + bias, targets), fp32.

    `hidden` is [tokens, hidden size], `targets` [tokens] with IGNORE_INDEX where no loss is
    taken; equal (to float rounding) to F.cross_entropy(F.linear(...).float(), targets,
    ignore_index=IGNORE_INDEX, reduction="sum"), in value and gradients.
    """
    keep = targets != IGNORE_INDEX
    hidden, targets = hidden[keep], targets[keep]
    if targets.numel() == 0:
        return (hidden.sum() * 0.0).float()  # keeps the graph connected for backward()
    if use_liger is None:
        use_liger = _liger_available(hidden.device)
    if use_liger:  # pragma: no cover - CUDA + liger-kernel only (run by scripts/gpu-check)
        from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy  # type: ignore[import-not-found]

        return liger_fused_linear_cross_entropy(hidden, weight, targets, bias, reduction="sum").float()
    chunk = chunk_tokens or chunk_tokens_for(weight.size(0))
    return _ChunkedLinearCrossEntropy.apply(hidden, weight, bias, targets, chunk, torch.is_grad_enabled())


@torch.no_grad()
def linear_cross_entropy_per_token(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, bias: torch.Tensor | None = None, chunk_tokens: int | None = None
) -> torch.Tensor:
    """Per-token cross-entropy (0 where targets is IGNORE_INDEX), chunk by chunk, for evaluation."""
    out = torch.zeros(targets.shape, dtype=torch.float32, device=hidden.device)
    chunk = chunk_tokens or chunk_tokens_for(weight.size(0))
    for start in range(0, hidden.size(0), chunk):
        logits = F.linear(hidden[start : start + chunk], weight, bias).float()
        out[start : start + chunk] = F.cross_entropy(logits, targets[start : start + chunk], ignore_index=IGNORE_INDEX, reduction="none")
    return out


def _base_of(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def splittable_output_layer(model) -> torch.nn.Linear | None:
    """The model's output layer when the logits are exactly `layer(hidden)`; None otherwise."""
    base = _base_of(model)
    get = getattr(base, "get_output_embeddings", None)
    head = get() if get is not None else None
    if type(head) is not torch.nn.Linear:  # an adapter-wrapped or quantized head keeps the plain loss
        return None
    config = getattr(base, "config", None)
    if any(getattr(config, key, None) not in (None, 1, 1.0) for key in _LOGIT_TRANSFORMS):
        return None
    return head


def _identity(hidden: torch.Tensor) -> torch.Tensor:
    return hidden


@contextmanager
def hidden_states_instead_of_logits(model) -> Iterator[torch.nn.Linear | None]:
    """Within the block the model's `.logits` are its last hidden states; yields the output layer
    (to apply chunk by chunk), or None when the model's logits must be computed as usual."""
    head = splittable_output_layer(model)
    if head is None:
        yield None
        return
    had_own = "forward" in head.__dict__  # accelerate's hooks replace forward on the instance too
    previous = head.__dict__.get("forward")
    setattr(head, "forward", _identity)  # noqa: B010 - an instance attribute shadows the class's forward
    try:
        yield head
    finally:
        if had_own:
            setattr(head, "forward", previous)  # noqa: B010
        else:
            del head.forward
