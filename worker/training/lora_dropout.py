"""LoRA's dropout fused into its first matrix, so training keeps a 1-byte mask per input value.

PEFT computes `lora_B(lora_A(dropout(x)))`. On the CPU, torch's dropout keeps a float copy of
its random mask and lora_A keeps the dropped input for its weight gradient: 8 bytes per input
value per adapted layer, about 0.85 MB per token on SmolLM2-135M with every linear layer adapted
(42% of all activations kept for the backward pass, measured with saved-tensor hooks). Fused,
only a boolean mask is kept (the input itself is kept once anyway and shared by the layers that
read it, e.g. q, k and v); the dropped input is recomputed in the backward pass. The random
draw is the same distribution as torch's dropout (each value kept with probability 1 - p, kept
values scaled by 1 / (1 - p)), from torch's generator, so a seed still fixes the run. Adapter
files are unchanged: the modules keep their parameter names and PEFT config.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _DropoutThenLinear(torch.autograd.Function):
    """y = (x * keep / (1 - p)) @ weight.T, keeping x (shared) and a boolean mask for backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, p: float) -> torch.Tensor:
        keep = torch.rand_like(x, dtype=torch.float32) >= p
        scale = 1.0 / (1.0 - p)
        # The 1 / (1 - p) scale is applied on the rank-sized side of the product (cheaper).
        out = F.linear(x * keep, weight) * scale
        ctx.save_for_backward(x, weight, keep)
        ctx.scale = scale
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x, weight, keep = ctx.saved_tensors
        grad_out = grad_out * ctx.scale
        grad_x = grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_x = ((grad_out @ weight.to(grad_out.dtype)) * keep).to(x.dtype)
        if ctx.needs_input_grad[1]:
            dropped = (x * keep).to(grad_out.dtype)
            grad_weight = (grad_out.reshape(-1, grad_out.shape[-1]).t() @ dropped.reshape(-1, dropped.shape[-1])).to(weight.dtype)
        return grad_x, grad_weight, None


def dropout_then_linear(x: torch.Tensor, weight: torch.Tensor, p: float) -> torch.Tensor:
    return _DropoutThenLinear.apply(x, weight, p)


class DropoutLinear(nn.Linear):
    """A bias-free nn.Linear (LoRA's A matrix) that applies dropout with probability `p` to its
    input while training; a plain linear layer in eval mode or with p = 0."""

    p: float = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0 or not torch.is_grad_enabled():
            if self.training and self.p:
                x = F.dropout(x, self.p, True)  # no graph to keep: plain dropout
            return F.linear(x, self.weight, self.bias)
        return dropout_then_linear(x, self.weight, self.p)


def fuse_lora_dropout(model) -> int:
    """Move each plain LoRA layer's dropout into its A matrix; returns how many were fused.

    Only vanilla LoRA forwards (`lora_B(lora_A(dropout(x)))`: LoRA, rsLoRA, PiSSA, QLoRA's 4-bit
    layers) with a bias-free nn.Linear A and an nn.Dropout of p > 0 are changed; DoRA and other
    variants, AdaLoRA, LoHa/LoKr/VeRA keep PEFT's own forward.
    """
    from peft.tuners.lora.layer import LoraLayer

    fused = 0
    for layer in model.modules():
        if not isinstance(layer, LoraLayer) or not isinstance(getattr(layer, "lora_A", None), nn.ModuleDict):
            continue
        variants = getattr(layer, "lora_variant", {}) or {}
        for name, lora_a in layer.lora_A.items():
            dropout = layer.lora_dropout[name] if name in layer.lora_dropout else None
            if (
                name in variants
                or type(lora_a) is not nn.Linear
                or lora_a.bias is not None
                or not isinstance(dropout, nn.Dropout)
                or dropout.p <= 0.0
            ):
                continue
            lora_a.__class__ = DropoutLinear
            lora_a.p = float(dropout.p)
            layer.lora_dropout[name] = nn.Identity()
            fused += 1
    return fused
