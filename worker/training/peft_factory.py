"""Technique catalogue key + parameters -> PEFT config and model.

Adding a technique is one builder function and one line in BUILDERS.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

from peft import LoraConfig, PeftConfig, PeftModel, TaskType, get_peft_model

from worker.training.spec import resolve_params


def _target_modules(value: Any) -> str | list[str]:
    """"all-linear" (PEFT's own shortcut), a list of names, or a comma-separated string."""
    if isinstance(value, str):
        if value == "all-linear" or "," not in value:
            return value.strip()
        return [name.strip() for name in value.split(",") if name.strip()]
    return list(value)


def build_lora_config(params: dict[str, Any], model) -> PeftConfig:
    """LoRA: low-rank update matrices next to the chosen linear layers."""
    return LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=int(params["r"]),
        lora_alpha=float(params["alpha"]),
        lora_dropout=float(params["dropout"]),
        target_modules=_target_modules(params["target_modules"]),
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
