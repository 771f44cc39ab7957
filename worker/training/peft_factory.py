"""Technique catalogue key + parameters -> PEFT config and model.

Adding a technique is one config function and one Builder line in BUILDERS; the line
also carries the technique's hooks into the training run (quantized loading, packing,
rank allocation after each step, how the result is saved).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from peft import (
    AdaLoraConfig,
    IA3Config,
    LoHaConfig,
    LoKrConfig,
    LoraConfig,
    PeftConfig,
    PrefixTuningConfig,
    PromptEncoderConfig,
    PromptTuningConfig,
    PromptTuningInit,
    TaskType,
    VeraConfig,
    get_peft_model,
)
from torch import nn

from app.domain.task_kinds import get_task_kind
from worker.training.lora_dropout import fuse_lora_dropout
from worker.training.saving import AdapterFiles, PlainLoraFromPissaFiles, WholeModelFiles
from worker.training.spec import resolve_params

# Parent modules whose linear layers count as "attention" (Llama/Mistral/Qwen: self_attn,
# GPT-2/Falcon: attn or self_attention, BERT-like: attention).
_ATTENTION_BLOCK_NAMES = ("self_attn", "attn", "attention", "self_attention")


def _linear_layer_names(model) -> list[str]:
    # bitsandbytes' Linear4bit/Linear8bitLt subclass nn.Linear; GPT-2 uses its own Conv1D.
    from transformers.pytorch_utils import Conv1D

    return [name for name, module in model.named_modules() if isinstance(module, (nn.Linear, Conv1D))]


def attention_target_modules(model) -> list[str]:
    """The linear layers inside attention blocks, by leaf name when unambiguous (q_proj, ...)."""
    linear = _linear_layer_names(model)

    def in_attention(name: str) -> bool:
        return any(part in _ATTENTION_BLOCK_NAMES for part in name.split(".")[:-1])

    inside = [name for name in linear if in_attention(name)]
    if not inside:
        raise ValueError("This model has no attention layers Tailor recognises; choose all linear layers.")
    leaves = {name.rsplit(".", 1)[-1] for name in inside}
    outside_leaves = {name.rsplit(".", 1)[-1] for name in linear if not in_attention(name)}
    if leaves & outside_leaves:
        return inside  # a leaf name is shared with non-attention layers: use full paths
    return sorted(leaves)


def resolve_target_modules(value: Any, model) -> str | list[str]:
    """ "all-linear" (PEFT's own shortcut), "attention", a list, or a comma-separated string."""
    if isinstance(value, str):
        value = value.strip()
        if value == "attention":
            return attention_target_modules(model)
        if value == "all-linear" or "," not in value:
            return value
        return [name.strip() for name in value.split(",") if name.strip()]
    return list(value)


@dataclass(frozen=True)
class BuildContext:
    """What a builder may need besides the parameters and the model."""

    task: str = "instruction"
    total_steps: int = 100  # AdaLoRA schedules its pruning over the run
    tokenizer_dir: str | None = None  # prompt tuning's text initialisation
    parent_adapter_dir: str | None = None  # start from this saved adapter's weights (and its shape) instead of a new one

    @property
    def classifies(self) -> bool:
        """Rows end in a label: the model has a classification head."""
        return get_task_kind(self.task).has_labels

    @property
    def task_type(self) -> TaskType:
        return TaskType.SEQ_CLS if self.classifies else TaskType.CAUSAL_LM


def _lora_kwargs(params: dict[str, Any], model, ctx: BuildContext) -> dict[str, Any]:
    return dict(
        task_type=ctx.task_type,
        r=int(params["r"]),
        lora_alpha=float(params["alpha"]),
        lora_dropout=float(params["dropout"]),
        target_modules=resolve_target_modules(params["target_modules"], model),
        bias="none",
        modules_to_save=_head_modules(model, ctx),
    )


def build_lora_config(params: dict[str, Any], model, ctx: BuildContext = BuildContext()) -> PeftConfig:
    """LoRA: low-rank update matrices next to the chosen linear layers."""
    return LoraConfig(**_lora_kwargs(params, model, ctx))


def build_dora_config(params, model, ctx=BuildContext()) -> PeftConfig:
    """DoRA: LoRA on the direction of each weight, with a learned magnitude."""
    return LoraConfig(**_lora_kwargs(params, model, ctx), use_dora=True)


def build_rslora_config(params, model, ctx=BuildContext()) -> PeftConfig:
    """rsLoRA: LoRA scaled by alpha/sqrt(r)."""
    return LoraConfig(**_lora_kwargs(params, model, ctx), use_rslora=True)


def build_pissa_config(params, model, ctx=BuildContext()) -> PeftConfig:
    """LoRA initialised from the principal singular vectors (fast randomized SVD, 4 iterations)."""
    kwargs = _lora_kwargs(params, model, ctx)
    kwargs["lora_dropout"] = 0.0  # PiSSA's conversion to plain LoRA assumes no dropout
    # peft's Literal spells the pattern itself ("pissa_niter_[number of iters]"); it accepts "pissa_niter_4".
    return LoraConfig(**kwargs, init_lora_weights="pissa_niter_4")  # type: ignore[arg-type]


def build_adalora_config(params, model, ctx=BuildContext()) -> PeftConfig:
    """AdaLoRA: starts at init_r and prunes to an average of r during the middle of the run."""
    total = max(3, int(ctx.total_steps))
    tinit, tfinal = total // 10, total // 5
    kwargs = _lora_kwargs(params, model, ctx)
    kwargs.pop("r")
    return AdaLoraConfig(
        **kwargs,
        init_r=max(int(params.get("init_r", 12)), int(params["r"])),
        target_r=int(params["r"]),
        tinit=tinit,
        tfinal=tfinal,
        deltaT=max(1, (total - tinit - tfinal) // 10),
        total_step=total,
    )


def build_loha_config(params, model, ctx=BuildContext()) -> PeftConfig:
    """LoHa: Hadamard product of two low-rank products."""
    return LoHaConfig(
        task_type=ctx.task_type,
        r=int(params["r"]),
        alpha=int(params["alpha"]),  # a whole number in the catalogue (app/domain/techniques.py)
        module_dropout=float(params["dropout"]),
        target_modules=resolve_target_modules(params["target_modules"], model),
        modules_to_save=_head_modules(model, ctx),
    )


def build_lokr_config(params, model, ctx=BuildContext()) -> PeftConfig:
    """LoKr: Kronecker product of two small matrices."""
    return LoKrConfig(
        task_type=ctx.task_type,
        r=int(params["r"]),
        alpha=int(params["alpha"]),  # a whole number in the catalogue (app/domain/techniques.py)
        module_dropout=float(params["dropout"]),
        target_modules=resolve_target_modules(params["target_modules"], model),
        modules_to_save=_head_modules(model, ctx),
    )


def build_vera_config(params, model, ctx=BuildContext()) -> PeftConfig:
    """VeRA: frozen shared random matrices, learned per-layer scaling vectors."""
    return VeraConfig(
        task_type=ctx.task_type,
        r=int(params["r"]),
        vera_dropout=float(params["dropout"]),
        target_modules=resolve_target_modules(params["target_modules"], model),
        save_projection=True,  # the adapter file carries the random matrices: no PRNG drift on reload
        modules_to_save=_head_modules(model, ctx),
    )


def build_ia3_config(params, model, ctx=BuildContext()) -> PeftConfig:
    """IA³: learned scaling of attention keys/values and feed-forward activations.

    PEFT knows the right layers for common model types; other models get none and are refused
    in plain words rather than silently adapting nothing.
    """
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING as TARGETS

    model_type = getattr(model.config, "model_type", "")
    if model_type not in TARGETS:
        raise ValueError(f"IA³ does not know which layers to scale in a {model_type!r} model; choose LoRA.")
    return IA3Config(task_type=ctx.task_type, modules_to_save=_head_modules(model, ctx))


def build_prompt_tuning_config(params, model, ctx=BuildContext()) -> PeftConfig:
    """Prompt tuning: learned virtual-token embeddings, from random vectors or a text's tokens."""
    kwargs: dict[str, Any] = dict(task_type=ctx.task_type, num_virtual_tokens=int(params["num_virtual_tokens"]))
    if params.get("init", "text") == "text" and ctx.tokenizer_dir:
        kwargs.update(
            prompt_tuning_init=PromptTuningInit.TEXT,
            prompt_tuning_init_text=str(params.get("init_text") or "Answer the question."),
            tokenizer_name_or_path=str(ctx.tokenizer_dir),
        )
    else:
        kwargs["prompt_tuning_init"] = PromptTuningInit.RANDOM
    return PromptTuningConfig(**kwargs)


def build_prefix_tuning_config(params, model, ctx=BuildContext()) -> PeftConfig:
    """Prefix tuning: learned key/value prefixes in every attention layer (decoders only)."""
    if not _is_decoder(model):
        raise ValueError("Prefix tuning needs a decoder model; this is an encoder. Choose prompt tuning or LoRA.")
    return PrefixTuningConfig(task_type=ctx.task_type, num_virtual_tokens=int(params["num_virtual_tokens"]))


def build_p_tuning_config(params, model, ctx=BuildContext()) -> PeftConfig:
    """P-tuning: virtual tokens produced by a small MLP prompt encoder."""
    return PromptEncoderConfig(
        task_type=ctx.task_type,
        num_virtual_tokens=int(params["num_virtual_tokens"]),
        encoder_hidden_size=int(params.get("encoder_hidden_size", 128)),
        encoder_reparameterization_type="MLP",
    )


def _head_modules(model, ctx: BuildContext) -> list[str] | None:
    """Classification heads are new and must train and be saved with the adapter.

    An encoder's pooler counts too: a masked-LM checkpoint (like MiniLM's) has none, so it is
    freshly initialised and would differ on every load unless it travels with the adapter.
    """
    if not ctx.classifies:
        return None
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    return [name for name in ("classifier", "score", "pooler") if name in names] or None


def _is_decoder(model) -> bool:
    # worker/training never imports app; a causal LM head or a cache-using config marks a decoder.
    config = model.config
    return (
        bool(getattr(config, "is_decoder", False))
        or any(a.endswith("ForCausalLM") for a in (getattr(config, "architectures", None) or []))
        or type(model).__name__.endswith("ForCausalLM")
    )


def _adapter_model(builder: Builder, model, params: dict[str, Any], ctx: BuildContext):
    """Base weights frozen, the technique's adapter added and trainable."""
    if builder.configure is None:
        raise ValueError("A technique without a PEFT config trains the model itself and needs its own make_model.")
    config = builder.configure(params, model, ctx)
    with warnings.catch_warnings():
        # peft 0.21 calls transformers 5's deprecated is_gradient_checkpointing; noise only.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
        if builder.bits(params) and getattr(model, "is_quantized", False):
            from peft import prepare_model_for_kbit_training

            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        if ctx.parent_adapter_dir:
            from peft import PeftModel

            adapted = PeftModel.from_pretrained(model, ctx.parent_adapter_dir, is_trainable=True)
        else:
            adapted = get_peft_model(model, config)
    fuse_lora_dropout(adapted)  # a 1-byte mask instead of two float copies per adapted input
    return adapted


def _every_weight_trains(builder: Builder, model, params: dict[str, Any], ctx: BuildContext):
    """Full fine-tuning: the model itself, every weight trainable."""
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    return model


def _adalora_allocate(model, step: int) -> None:
    """AdaLoRA reallocates ranks from the fresh gradients after every optimizer step."""
    model.base_model.update_and_allocate(step)


@dataclass(frozen=True)
class Builder:
    """How the worker trains one catalogue technique: a PEFT config builder, and the hooks the
    training recipe (worker.training.loop) calls where techniques differ."""

    configure: Callable[..., PeftConfig] | None  # (params, model, ctx) -> config; None: no adapter
    make_model: Callable[..., Any] = _adapter_model  # (builder, base model, params, ctx) -> model to train
    quantized_bits: int = 0  # load the base quantized to this many bits ("bits" parameter overrides)
    packs_examples: bool = True  # False: virtual tokens or a prefix go in front of every row
    fp32_weights: bool = False  # keep fp32 weights under mixed precision (every weight is updated)
    after_optimizer_step: Callable[[Any, int], None] | None = None  # (model, steps done before this one)
    files: Callable[[Any], AdapterFiles] = AdapterFiles  # started on the built model; writes the result

    def bits(self, params: dict[str, Any]) -> int:
        """Quantization bits for the base model; 0 = not quantized."""
        if not self.quantized_bits:
            return 0
        return int(params.get("bits") or self.quantized_bits)

    def build_model(self, model, params: dict[str, Any], ctx: BuildContext):
        return self.make_model(self, model, params, ctx)


FULL_FINE_TUNING = "full"

BUILDERS: dict[str, Builder] = {
    "lora": Builder(build_lora_config),
    "qlora": Builder(build_lora_config, quantized_bits=4),  # the quantized base is the loader's job
    "dora": Builder(build_dora_config),
    "rslora": Builder(build_rslora_config),
    "pissa": Builder(build_pissa_config, files=PlainLoraFromPissaFiles),
    "adalora": Builder(build_adalora_config, after_optimizer_step=_adalora_allocate),
    "loha": Builder(build_loha_config),
    "lokr": Builder(build_lokr_config),
    "vera": Builder(build_vera_config),
    "ia3": Builder(build_ia3_config),
    "prompt_tuning": Builder(build_prompt_tuning_config, packs_examples=False),
    "prefix_tuning": Builder(build_prefix_tuning_config, packs_examples=False),
    "p_tuning": Builder(build_p_tuning_config, packs_examples=False),
    FULL_FINE_TUNING: Builder(None, make_model=_every_weight_trains, fp32_weights=True, files=WholeModelFiles),
}


def builder_for(technique: str) -> Builder:
    """The BUILDERS entry for a catalogue key; ValueError naming the known keys otherwise."""
    try:
        return BUILDERS[technique]
    except KeyError:
        known = ", ".join(sorted(BUILDERS))
        raise ValueError(f"Unknown technique {technique!r}; the training worker knows: {known}.") from None


def quantization_bits(technique: str, params: dict[str, Any]) -> int:
    entry = BUILDERS.get(technique)
    return entry.bits(params) if entry is not None else 0


def build_peft_config(model, technique: str, params: dict[str, Any], ctx: BuildContext | None = None) -> PeftConfig:
    """The PEFT config for a catalogue technique; defaults fill missing parameters."""
    entry = builder_for(technique)
    if entry.configure is None:
        raise ValueError(f"Technique {technique!r} trains the model itself and has no PEFT config.")
    return entry.configure(resolve_params(technique, params), model, ctx or BuildContext())


def build_peft_model(model, technique: str, params: dict[str, Any], ctx: BuildContext | None = None):
    """Wrap `model` for `technique`: base weights frozen, adapter weights trainable.

    Full fine-tuning returns the model itself with every weight trainable.
    """
    return builder_for(technique).build_model(model, resolve_params(technique, params), ctx or BuildContext())
