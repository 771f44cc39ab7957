"""Technique catalogue key + parameters -> PEFT config and model.

Adding a technique is one builder function and one line in BUILDERS.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

from torch import nn

from peft import LoraConfig, PeftConfig, PeftModel, TaskType, get_peft_model

from worker.training.spec import resolve_params


# Parent modules whose linear layers count as "attention" (Llama/Mistral/Qwen: self_attn,
# GPT-2/Falcon: attn or self_attention, BERT-like: attention).
_ATTENTION_BLOCK_NAMES = ("self_attn", "attn", "attention", "self_attention")


def _linear_layer_names(model) -> list[str]:
    # bitsandbytes' Linear4bit/Linear8bitLt subclass nn.Linear; GPT-2 uses its own Conv1D.
    from transformers.pytorch_utils import Conv1D

    return [
        name for name, module in model.named_modules() if isinstance(module, (nn.Linear, Conv1D))
    ]


def attention_target_modules(model) -> list[str]:
    """The linear layers inside attention blocks, by leaf name when unambiguous (q_proj, ...)."""
    linear = _linear_layer_names(model)

    def in_attention(name: str) -> bool:
        return any(part in _ATTENTION_BLOCK_NAMES for part in name.split(".")[:-1])

    inside = [name for name in linear if in_attention(name)]
    if not inside:
        raise ValueError(
            "This model has no attention layers Tailor recognises; choose all linear layers."
        )
    leaves = {name.rsplit(".", 1)[-1] for name in inside}
    outside_leaves = {name.rsplit(".", 1)[-1] for name in linear if not in_attention(name)}
    if leaves & outside_leaves:
        return inside  # a leaf name is shared with non-attention layers: use full paths
    return sorted(leaves)


def resolve_target_modules(value: Any, model) -> str | list[str]:
    """"all-linear" (PEFT's own shortcut), "attention", a list, or a comma-separated string."""
    if isinstance(value, str):
        value = value.strip()
        if value == "attention":
            return attention_target_modules(model)
        if value == "all-linear" or "," not in value:
            return value
        return [name.strip() for name in value.split(",") if name.strip()]
    return list(value)


def build_lora_config(params: dict[str, Any], model) -> PeftConfig:
    """LoRA: low-rank update matrices next to the chosen linear layers."""
    return LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=int(params["r"]),
        lora_alpha=float(params["alpha"]),
        lora_dropout=float(params["dropout"]),
        target_modules=resolve_target_modules(params["target_modules"], model),
        bias="none",
    )


BUILDERS: dict[str, Callable[[dict[str, Any], Any], PeftConfig]] = {
    "lora": build_lora_config,
}


def build_peft_config(model, technique: str, params: dict[str, Any]) -> PeftConfig:
    """The PEFT config for a catalogue technique; defaults fill missing parameters."""
    try:
        builder = BUILDERS[technique]
    except KeyError:
        known = ", ".join(sorted(BUILDERS))
        raise ValueError(
            f"Unknown technique {technique!r}; the training worker knows: {known}."
        ) from None
    return builder(resolve_params(params), model)


def build_peft_model(model, technique: str, params: dict[str, Any]) -> PeftModel:
    """Wrap `model` for `technique`: base weights frozen, adapter weights trainable."""
    config = build_peft_config(model, technique, params)
    with warnings.catch_warnings():
        # peft 0.21 calls transformers 5's deprecated is_gradient_checkpointing; noise only.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
        return get_peft_model(model, config)
