"""The technique catalogue: one entry per PEFT technique, read by the forms, the API's
validation and docs, and the worker (which maps each key to a builder). No torch here.

Adding a technique: one `Technique(...)` entry below plus its builder in
`worker/training/peft_factory.py` under the same key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from app.domain.numbers import finite_float, whole_number
from app.domain.preference_losses import LOSS_CHOICES
from app.domain.task_kinds import TASK_KEYS, TASK_KINDS


@dataclass(frozen=True)
class Param:
    name: str
    label: str
    kind: str  # "int" | "float" | "choice" | "str"
    default: Any
    help: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    advanced: bool = False

    def coerce(self, raw: Any) -> Any:
        """Convert and bound-check one value; raises ValueError with a plain message."""
        if raw is None or raw == "":
            return self.default
        try:
            if self.kind == "int":
                value: Any = whole_number(raw)
            elif self.kind == "float":
                value = finite_float(raw)
            elif self.kind == "choice":
                value = str(raw)
                if value not in self.choices:
                    raise ValueError
            else:
                value = str(raw)
        except (TypeError, ValueError):
            expected = {"int": "a whole number", "float": "a number", "choice": "one of " + ", ".join(self.choices)}.get(self.kind, "text")
            raise ValueError(f"{self.label} must be {expected}.") from None
        if self.minimum is not None and value < self.minimum:
            raise ValueError(f"{self.label} must be at least {self.minimum:g} (got {value:g}).")
        if self.maximum is not None and value > self.maximum:
            raise ValueError(f"{self.label} must be at most {self.maximum:g} (got {value:g}).")
        return value


# Families decide how the worker loads and saves: "lora"-like and "adapter" and "prompt" techniques
# save a PEFT adapter; "full" saves a whole model.
FAMILIES = ("lora", "adapter", "prompt", "full")


@dataclass(frozen=True)
class Technique:
    key: str
    name: str
    summary: str
    description: str
    task_kinds: tuple[str, ...]
    params: tuple[Param, ...]
    typical_adapter_size: str
    memory_needs: str
    family: str = "lora"
    hardware: str = "Any worker: a GPU is faster, a CPU works for small models."
    requires_cuda: bool = False  # refuse on a CPU-only worker
    needs_decoder: bool = False  # uses a decoder's key/value cache (prefix tuning): no encoders
    quantized_bits: int = 0  # 4 or 8 when the base model is loaded quantized (bitsandbytes)
    training_defaults: tuple[tuple[str, Any], ...] = ()  # overrides of TRAINING_PARAMS defaults

    def param(self, name: str) -> Param:
        return next(p for p in self.all_params if p.name == name)

    @property
    def all_params(self) -> tuple[Param, ...]:
        overrides = dict(self.training_defaults)
        shared = tuple(replace(p, default=overrides[p.name]) if p.name in overrides else p for p in TRAINING_PARAMS)
        return shared + self.params

    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.all_params}


class ParameterError(ValueError):
    """One or more parameters are out of bounds; `errors` maps parameter name to message."""

    def __init__(self, errors: dict[str, str]):
        super().__init__("; ".join(errors.values()))
        self.errors = errors


# Parameters every technique shares: how long and how hard to train.
TRAINING_PARAMS: tuple[Param, ...] = (
    Param(
        "epochs",
        "Epochs",
        "int",
        2,
        "How many times training goes over your data. More epochs fit the data more closely but can memorise it.",
        1,
        50,
    ),
    Param(
        "learning_rate",
        "Learning rate",
        "float",
        2e-4,
        "How big each update step is. Too high makes training unstable; too low learns slowly.",
        1e-7,
        1.0,
    ),
    Param("batch_size", "Batch size", "int", 8, "Examples per step. Larger batches are smoother but need more memory.", 1, 512),
    Param(
        "gradient_accumulation_steps",
        "Gradient accumulation",
        "int",
        1,
        "Add up this many batches before each update: a larger effective batch without more memory.",
        1,
        256,
        advanced=True,
    ),
    Param("max_length", "Maximum length (tokens)", "int", 256, "Longer examples are cut to this many tokens.", 16, 32768),
    Param(
        "warmup_ratio",
        "Warm-up share",
        "float",
        0.05,
        "Share of the steps over which the learning rate ramps up from zero.",
        0.0,
        0.5,
        advanced=True,
    ),
    Param(
        "validation_fraction",
        "Held-out share",
        "float",
        0.1,
        "Share of the rows kept aside to measure the result (at least one row).",
        0.0,
        0.5,
    ),
    Param("max_steps", "Step limit", "int", 0, "Stop after this many update steps (0 = no limit).", 0, 1_000_000, advanced=True),
    Param(
        "eval_steps",
        "Check every N steps",
        "int",
        0,
        "Measure the loss on the held-out rows every this many steps (0 = once per epoch).",
        0,
        1_000_000,
        advanced=True,
    ),
    Param(
        "early_stopping_patience",
        "Early stopping patience",
        "int",
        0,
        "Stop when the held-out loss has not improved for this many checks in a row (0 = never stop early).",
        0,
        1000,
        advanced=True,
    ),
    Param(
        "checkpoint_minutes",
        "Checkpoint every (minutes)",
        "float",
        10.0,
        "Save the training state this often so a job interrupted by a worker restart resumes where it was (0 = no checkpoints).",
        0.0,
        1440.0,
        advanced=True,
    ),
    Param(
        "packing",
        "Pack short examples",
        "choice",
        "off",
        (
            "Join short examples into one sequence (kept apart by the attention mask) so no compute goes to padding. "
            "Helps when many examples are much shorter than the maximum length. Not used for classification or the "
            "prompt-based techniques."
        ),
        choices=("off", "on"),
        advanced=True,
    ),
    Param(
        "precision",
        "Precision",
        "choice",
        "auto",
        "Number format for training. 'auto' uses bf16 (or fp16) on a GPU that supports it and fp32 on a CPU.",
        choices=("auto", "fp32", "bf16", "fp16"),
        advanced=True,
    ),
    Param(
        "micro_batch_tokens",
        "Tokens per pass",
        "int",
        0,
        (
            "Split each batch into forward passes of at most this many tokens (padding included): the same update "
            "with less memory. 0 = automatic: 256 on a CPU, no split on a GPU."
        ),
        0,
        1_000_000,
        advanced=True,
    ),
    Param(
        "gradient_checkpointing",
        "Gradient checkpointing",
        "choice",
        "auto",
        "Recompute activations instead of storing them: less memory, about 30% slower. 'auto' turns it on for a GPU "
        "only when the job would not fit in its memory without.",
        choices=("auto", "on", "off"),
        advanced=True,
    ),
)

_RANK = Param("r", "Rank", "int", 8, "Capacity of the adapter. 8–16 suits most tasks; higher learns more but is larger.", 1, 512)
_ALPHA = Param("alpha", "Alpha", "int", 16, "Scales the adapter's effect; usually twice the rank.", 1, 2048)
_DROPOUT = Param(
    "dropout", "Dropout", "float", 0.05, "Randomly drops part of the adapter while training, against memorising.", 0.0, 0.9, advanced=True
)
_TARGETS = Param(
    "target_modules",
    "Layers to adapt",
    "choice",
    "all-linear",
    "Which layers get an adapter: all linear layers (best quality) or only the attention projections (smaller).",
    choices=("all-linear", "attention"),
    advanced=True,
)
# Preference tuning (the preference and feedback task kinds; app/domain/preference_losses.py).
_PREFERENCE_PARAMS = (
    Param(
        "preference_loss",
        "Preference loss",
        "choice",
        "auto",
        "Preference and feedback tasks only. 'auto': DPO for pairs of answers, KTO for answers marked good or bad. "
        "ORPO and SimPO learn from pairs without comparing to the starting model.",
        choices=LOSS_CHOICES,
        advanced=True,
    ),
    Param(
        "preference_beta",
        "Preference strength (beta)",
        "float",
        0.1,
        "Preference and feedback tasks only. How strongly preferences pull the model away from where it started "
        "(DPO, KTO, SimPO) or weigh against learning the chosen answers (ORPO). 0.1 is the usual value.",
        0.001,
        20.0,
        advanced=True,
    ),
    Param(
        "simpo_gamma",
        "SimPO margin (gamma ÷ beta)",
        "float",
        0.5,
        "SimPO only: the margin the chosen answer must win by, as a share of beta.",
        0.0,
        10.0,
        advanced=True,
    ),
)
_LORA_PARAMS = (_RANK, _ALPHA, _DROPOUT, _TARGETS)
_VIRTUAL_TOKENS = Param(
    "num_virtual_tokens",
    "Virtual tokens",
    "int",
    20,
    "How many learned tokens are put in front of every input. 10–30 is typical; more learns more but shortens the room for your text.",
    1,
    512,
)
_LORA_SIZE = "1–50 MB (0.1–1% of the base model)"
_FULL_PRECISION_MEMORY = "The base model in full precision plus a little for the adapter and optimiser."

CATALOGUE: dict[str, Technique] = {
    technique.key: technique
    for technique in (
        Technique(
            key="lora",
            name="LoRA",
            summary="Low-rank adapters: the standard choice for teaching a model your tone and answers.",
            description=(
                "LoRA freezes the base model and learns two small matrices beside each chosen layer. "
                "It changes how the model writes and answers without touching its original weights, "
                "trains fast, and the result is a small file you can switch on and off. "
                "Pick it first unless you have a reason not to."
            ),
            task_kinds=TASK_KEYS,
            params=(*_LORA_PARAMS, *_PREFERENCE_PARAMS),
            typical_adapter_size=_LORA_SIZE,
            memory_needs=_FULL_PRECISION_MEMORY,
        ),
        Technique(
            key="qlora",
            name="QLoRA",
            summary="LoRA on a compressed (4-bit or 8-bit) copy of the base model: big models on small machines.",
            description=(
                "QLoRA stores the frozen base model in 4-bit (NF4) or 8-bit numbers and trains a LoRA adapter "
                "on top. It needs roughly a quarter (4-bit) or half (8-bit) of LoRA's memory for the base model, "
                "at a small cost in speed and sometimes quality. Pick it when the model does not fit in memory "
                "with plain LoRA. The adapter loads on the normal, uncompressed model too."
            ),
            task_kinds=TASK_KEYS,
            params=(
                Param(
                    "bits",
                    "Base model precision (bits)",
                    "choice",
                    "4",
                    "4-bit NF4 saves the most memory; 8-bit is closer to the original model.",
                    choices=("4", "8"),
                ),
                *_LORA_PARAMS,
                *_PREFERENCE_PARAMS,
            ),
            typical_adapter_size=_LORA_SIZE,
            memory_needs="About a quarter (4-bit) or half (8-bit) of the base model's full-precision size, plus the adapter.",
            hardware="Any worker with bitsandbytes; CPU kernels need layer sizes that are multiples of 32.",
            quantized_bits=4,
        ),
        Technique(
            key="dora",
            name="DoRA",
            summary="LoRA that learns each weight's size and direction separately: often better quality at low rank.",
            description=(
                "DoRA splits every adapted weight into a length and a direction and trains LoRA on the direction. "
                "It often matches a higher-rank LoRA with a smaller adapter, but each step is slower "
                "(about 1.5–2×). Pick it when LoRA's quality falls short and time allows."
            ),
            task_kinds=TASK_KEYS,
            params=(*_LORA_PARAMS, *_PREFERENCE_PARAMS),
            typical_adapter_size=_LORA_SIZE,
            memory_needs=_FULL_PRECISION_MEMORY + " Somewhat more than LoRA for activations.",
        ),
        Technique(
            key="rslora",
            name="rsLoRA",
            summary="LoRA with rank-stabilised scaling: lets higher ranks actually learn more.",
            description=(
                "Rank-stabilised LoRA scales the adapter by alpha/√rank instead of alpha/rank, so raising the rank "
                "keeps improving results instead of stalling. Same speed and size as LoRA. "
                "Pick it when you want a rank of 32 or more."
            ),
            task_kinds=TASK_KEYS,
            params=(replace(_RANK, default=16), _ALPHA, _DROPOUT, _TARGETS, *_PREFERENCE_PARAMS),
            typical_adapter_size=_LORA_SIZE,
            memory_needs=_FULL_PRECISION_MEMORY,
        ),
        Technique(
            key="pissa",
            name="LoRA with PiSSA start",
            summary="LoRA that starts from the most important directions of the model's weights: converges faster.",
            description=(
                "PiSSA initialises the LoRA matrices from the main components of each weight (found by a quick "
                "SVD) instead of from zero, so training starts where it matters and usually converges in fewer "
                "steps. The saved adapter is converted to ordinary LoRA form (twice the rank) so it loads on the "
                "unchanged base model."
            ),
            task_kinds=TASK_KEYS,
            params=_LORA_PARAMS,
            typical_adapter_size="2× a LoRA adapter of the same rank (converted for the original base model)",
            memory_needs=_FULL_PRECISION_MEMORY + " A short extra pause at the start for the SVD.",
        ),
        Technique(
            key="adalora",
            name="AdaLoRA",
            summary="LoRA that moves its capacity to the layers that need it most while it trains.",
            description=(
                "AdaLoRA starts every layer with a larger rank and prunes the least useful directions during "
                "training, ending with a budget spread unevenly where it helps most. Pick it for longer runs "
                "(hundreds of steps) when you are unsure which rank to choose."
            ),
            task_kinds=TASK_KEYS,
            params=(
                Param("r", "Final average rank", "int", 8, "The average rank left after pruning.", 1, 256),
                Param("init_r", "Starting rank", "int", 12, "The rank every layer starts with, before pruning.", 1, 512),
                _ALPHA,
                _DROPOUT,
                _TARGETS,
            ),
            typical_adapter_size=_LORA_SIZE,
            memory_needs=_FULL_PRECISION_MEMORY,
        ),
        Technique(
            key="loha",
            name="LoHa",
            summary="Low-rank Hadamard adapters: more expressive than LoRA at the same size.",
            description=(
                "LoHa multiplies two low-rank products element by element, which can represent richer changes "
                "than LoRA with the same number of parameters. Popular for style adaptation. "
                "Slightly slower than LoRA."
            ),
            task_kinds=TASK_KEYS,
            params=(_RANK, _ALPHA, replace(_DROPOUT, name="dropout", default=0.0), _TARGETS),
            typical_adapter_size="2× a LoRA adapter of the same rank",
            memory_needs=_FULL_PRECISION_MEMORY,
            training_defaults=(("learning_rate", 1e-3),),
        ),
        Technique(
            key="lokr",
            name="LoKr",
            summary="Kronecker-product adapters: very small adapters for large layers.",
            description=(
                "LoKr builds each weight change from a Kronecker product of two small matrices, giving very "
                "compact adapters. Pick it when adapter size matters most."
            ),
            task_kinds=TASK_KEYS,
            params=(_RANK, _ALPHA, replace(_DROPOUT, default=0.0), _TARGETS),
            typical_adapter_size="Under 1 MB to a few MB",
            memory_needs=_FULL_PRECISION_MEMORY,
            training_defaults=(("learning_rate", 1e-3),),
        ),
        Technique(
            key="vera",
            name="VeRA",
            summary="Shared random matrices with tiny learned scales: the smallest LoRA-like adapter.",
            description=(
                "VeRA shares one pair of frozen random matrices across all layers and learns only small scaling "
                "vectors per layer, so the adapter is ten or more times smaller than LoRA's. It learns less per "
                "step; pick it when you need many adapters of one model and each must be tiny."
            ),
            task_kinds=TASK_KEYS,
            params=(
                Param(
                    "r",
                    "Rank",
                    "int",
                    256,
                    "Size of the shared random matrices; VeRA uses much higher ranks than LoRA at little cost.",
                    1,
                    4096,
                ),
                replace(_DROPOUT, default=0.0),
                _TARGETS,
            ),
            typical_adapter_size="Tens of KB to 1 MB (plus the shared random matrices)",
            memory_needs=_FULL_PRECISION_MEMORY,
            training_defaults=(("learning_rate", 4e-3),),
        ),
        Technique(
            key="ia3",
            name="IA³ (adapter)",
            summary="A plug-in adapter that rescales the model's inner activations: tiny and fast.",
            description=(
                "IA³ adds small learned scaling vectors to the attention keys and values and to the feed-forward "
                "layers: a plug-in adapter with about 0.01% of the model's parameters. It trains fast and works "
                "well for steering format and tone; for teaching new facts LoRA is stronger. "
                "It wants a high learning rate (about 0.01)."
            ),
            task_kinds=TASK_KEYS,
            params=(),
            typical_adapter_size="Tens to hundreds of KB",
            memory_needs=_FULL_PRECISION_MEMORY,
            family="adapter",
            training_defaults=(("learning_rate", 1e-2),),
        ),
        Technique(
            key="prompt_tuning",
            name="Prompt tuning",
            summary="Learns a few 'virtual words' placed before every input; the model itself is untouched.",
            description=(
                "Prompt tuning learns the embeddings of a handful of virtual tokens put in front of every input. "
                "The adapter is tiny and the base model stays exactly as it was. It works best on larger models "
                "and simpler tasks. Start from random tokens or from a text that describes the task."
            ),
            task_kinds=TASK_KEYS,
            params=(
                _VIRTUAL_TOKENS,
                Param(
                    "init",
                    "Start from",
                    "choice",
                    "text",
                    "'text' starts the virtual tokens from the words below (usually learns faster); 'random' from random vectors.",
                    choices=("text", "random"),
                ),
                Param(
                    "init_text",
                    "Starting text",
                    "str",
                    "Answer the customer's question helpfully and accurately.",
                    "Used when starting from text: a sentence describing the task.",
                ),
            ),
            typical_adapter_size="Under 100 KB",
            memory_needs=_FULL_PRECISION_MEMORY + " Activations for the extra tokens.",
            family="prompt",
            training_defaults=(("learning_rate", 3e-2),),
        ),
        Technique(
            key="prefix_tuning",
            name="Prefix tuning",
            summary="Learns hidden 'prefix' states inside every layer of the model.",
            description=(
                "Prefix tuning learns key and value vectors that every attention layer sees before your text. "
                "Stronger than prompt tuning on small models, still with a small adapter. It relies on the "
                "decoder's key/value cache, so it does not work on encoder models such as BERT or MiniLM."
            ),
            task_kinds=TASK_KEYS,
            params=(_VIRTUAL_TOKENS,),
            typical_adapter_size="Under a few MB",
            memory_needs=_FULL_PRECISION_MEMORY,
            family="prompt",
            needs_decoder=True,
            training_defaults=(("learning_rate", 1e-2),),
        ),
        Technique(
            key="p_tuning",
            name="P-tuning",
            summary="Virtual tokens produced by a small learned network: more stable than plain prompt tuning.",
            description=(
                "P-tuning learns virtual tokens like prompt tuning, but produces them with a small neural "
                "network, which trains more steadily. The saved adapter holds only the final virtual tokens."
            ),
            task_kinds=TASK_KEYS,
            params=(
                _VIRTUAL_TOKENS,
                Param(
                    "encoder_hidden_size",
                    "Encoder size",
                    "int",
                    128,
                    "Width of the small network that produces the virtual tokens.",
                    8,
                    4096,
                    advanced=True,
                ),
            ),
            typical_adapter_size="Under 100 KB",
            memory_needs=_FULL_PRECISION_MEMORY,
            family="prompt",
            training_defaults=(("learning_rate", 3e-3),),
        ),
        Technique(
            key="full",
            name="Full fine-tuning (reference)",
            summary="Trains every weight of the model: the quality reference, at the highest cost.",
            description=(
                "Full fine-tuning updates all of the model's weights. It can learn the most, but needs about four "
                "times the model's size in memory for the optimiser, and the result is a whole model, not a small "
                "adapter. Offered as a reference to compare the adapters against."
            ),
            task_kinds=TASK_KEYS,
            params=(),
            typical_adapter_size="The whole model (hundreds of MB and up)",
            memory_needs="About 4× the model's full-precision size (weights, gradients and optimiser state).",
            family="full",
            hardware="A GPU for anything above ~100M parameters; a CPU only for tiny models.",
            training_defaults=(("learning_rate", 5e-5),),
        ),
    )
}


# A task kind limited to some techniques (preference tuning: the LoRA family) is left off the others.
CATALOGUE = {
    key: replace(t, task_kinds=tuple(task for task in t.task_kinds if TASK_KINDS[task].allows_technique(key)))
    for key, t in CATALOGUE.items()
}


def get_technique(key: str) -> Technique:
    try:
        return CATALOGUE[key]
    except KeyError:
        raise ParameterError({"technique": f"Unknown technique {key!r}. Choose one of: {', '.join(CATALOGUE)}."}) from None


def validate_params(technique: Technique, raw: dict[str, Any]) -> dict[str, Any]:
    """Fill defaults and bound-check every parameter; unknown names are refused."""
    known = {p.name for p in technique.all_params}
    errors = {name: f"{name!r} is not a parameter of {technique.name}." for name in raw if name not in known}
    clean: dict[str, Any] = {}
    for param in technique.all_params:
        try:
            clean[param.name] = param.coerce(raw.get(param.name))
        except ValueError as exc:
            errors[param.name] = str(exc)
    if errors:
        raise ParameterError(errors)
    return clean


# Model types whose models are encoders only (no causal language-model head, no key/value cache).
ENCODER_MODEL_TYPES = frozenset(
    {
        "bert",
        "roberta",
        "distilbert",
        "albert",
        "electra",
        "deberta",
        "deberta-v2",
        "xlm-roberta",
        "mpnet",
        "camembert",
        "modernbert",
        "xlm",
        "ernie",
        "nomic_bert",
    }
)


def is_encoder_config(config: dict | None) -> bool:
    """True for encoder-only models (BERT, MiniLM, ...), judged from config.json alone."""
    if not config:
        return False
    if str(config.get("model_type", "")).lower() in ENCODER_MODEL_TYPES:
        return True
    architectures = config.get("architectures") or []
    masked = any(a.endswith("ForMaskedLM") for a in architectures)
    causal = any(a.endswith("ForCausalLM") for a in architectures)
    return masked and not causal and not config.get("is_decoder", False)


def tasks_for_model(config: dict | None) -> tuple[str, ...]:
    """Task kinds a base model can do: an encoder only those without generation; a decoder all."""
    if is_encoder_config(config):
        return tuple(key for key, kind in TASK_KINDS.items() if not kind.generative)
    return TASK_KEYS


def _linear_sizes(config: dict) -> list[int]:
    keys = ("hidden_size", "intermediate_size", "n_embd", "d_model", "ffn_dim", "dim")
    return [int(config[k]) for k in keys if isinstance(config.get(k), int)]


def unavailable_reason(
    technique: Technique, task: str | None = None, model_config: dict | None = None, worker_has_cuda: bool | None = None
) -> str | None:
    """Why `technique` cannot run here, in plain words, or None when it can.

    Decided from catalogue data and the base model's config.json only (the web never imports
    torch). `worker_has_cuda` is None when no worker has said what it has.
    """
    if task is not None and task not in technique.task_kinds:
        kind = TASK_KINDS.get(task)
        return f"{technique.name} does not support the {(kind.label if kind else task).lower()} task."
    if task is not None and task not in tasks_for_model(model_config):
        return "This base model is an encoder: it can only be trained for classification."
    if technique.needs_decoder and is_encoder_config(model_config):
        return f"{technique.name} needs a decoder model's key/value cache; encoder models such as BERT or MiniLM have none."
    if technique.family == "prompt" and task == "classification" and is_encoder_config(model_config):
        # Found by the encoder matrix test: a reloaded prompt-tuned encoder classifier does not
        # give the trained logits back. Refused until that round trip holds.
        return f"{technique.name} for classification on an encoder model does not yet reload reliably; choose LoRA, DoRA, LoHa or LoKr."
    if technique.requires_cuda and worker_has_cuda is False:
        return f"{technique.name} needs an NVIDIA GPU, and the workers here have none."
    if technique.quantized_bits and worker_has_cuda is not True and model_config:
        odd = [size for size in _linear_sizes(model_config) if size % 32]
        if odd:
            return (
                f"{technique.name} on a CPU needs layer sizes that are multiples of 32; this model has "
                f"{', '.join(map(str, odd))}. Use LoRA, or a GPU worker."
            )
    return None


# ---------------------------------------------------------------- presets

PRESETS: dict[str, str] = {
    "quick": "Quick: one short pass to see whether it works.",
    "balanced": "Balanced: good results for most data (recommended).",
    "thorough": "Thorough: more passes and capacity, with checks to stop before it memorises.",
}


# The quick and balanced presets ask for no more training than the worker that will take the job
# gets through, with everything else a person waits for (loading, held-out checks, saving, the
# automatic evaluation), in this time from Start training to an evaluated, downloadable adapter:
# a first job ends within five minutes with 100 s to spare: on a shared CPU the load can rise
# after the worker calibrated (bench/first_job.py measured training 28% slower than calibrated when
# another process started mid-job), and the estimate's other parts err by up to ~20%.
QUICK_START_SECONDS = 200.0
# On a worker too slow for one epoch in that time, the presets train part of one, never fewer
# steps than this (at batch 4 and 1e-3 on the sample data: enough to beat the base model's
# held-out loss with intervals apart).
QUICK_START_MIN_STEPS = 12
# A LoRA-family run shorter than an epoch: smaller batches and a higher rate (see preset_params).
SHORT_RUN_BATCH = 4
SHORT_RUN_LEARNING_RATE = 1e-3


def _default(technique: Technique, name: str) -> float:
    return float(next(p.default for p in technique.all_params if p.name == name))


@dataclass(frozen=True)
class WorkerPace:
    """What the presets need to know of the worker that would take the job (from its estimate)."""

    epoch_seconds: float  # one more epoch: its steps and its held-out check
    fixed_seconds: float = 0.0  # the rest: loading, tokenizing, saving, the automatic evaluation
    steps_per_epoch: int = 0

    def epochs_within(self, budget: float) -> float:
        """Epochs (a fraction when not even one fits) that end within `budget` seconds."""
        if self.epoch_seconds <= 0:
            return math.inf
        return max(0.0, budget - self.fixed_seconds) / self.epoch_seconds


def preset_params(technique: Technique, task: str, n_rows: int, preset: str, pace: WorkerPace | None = None) -> dict[str, Any]:
    """Parameter values for a preset, chosen from the number of training rows and the worker's speed.

    Small datasets get more epochs (each pass is short and there is little to learn from);
    large ones fewer. `pace` (the worker that would take the job, from its calibrated or measured
    speed) caps the quick and balanced presets so that the whole wait ends within
    QUICK_START_SECONDS: fewer epochs, and on a worker too slow for one, a step limit (never
    below QUICK_START_MIN_STEPS). Only parameters the technique has are returned.
    """
    if preset not in PRESETS:
        raise ParameterError({"preset": f"Unknown preset {preset!r}. Choose one of: {', '.join(PRESETS)}."})
    small, large = n_rows < 500, n_rows >= 5000
    values: dict[str, Any] = {
        "quick": {"epochs": 1, "max_length": 256, "r": 8, "num_virtual_tokens": 10, "eval_steps": 0, "early_stopping_patience": 0},
        "balanced": {
            "epochs": 3 if small else 1 if large else 2,
            "max_length": 512,
            "r": 16,
            "num_virtual_tokens": 20,
            "eval_steps": 0,
            "early_stopping_patience": 0,
        },
        "thorough": {
            "epochs": 6 if small else 2 if large else 4,
            "max_length": 1024,
            "r": 32,
            "num_virtual_tokens": 30,
            "eval_steps": 0 if small else 200,
            "early_stopping_patience": 3,
        },
    }[preset]
    # Every preset names its batch and rate, so that choosing another preset undoes a short run's.
    values.update(batch_size=int(_default(technique, "batch_size")), learning_rate=_default(technique, "learning_rate"))
    if pace is not None and preset in ("quick", "balanced"):
        fits = pace.epochs_within(QUICK_START_SECONDS)
        values["epochs"] = max(1, min(int(values["epochs"]), int(fits)))
        values["max_steps"] = 0
        steps_per_epoch = pace.steps_per_epoch
        if fits < 1 and technique.family == "lora":
            # Part of an epoch: the same rows in smaller batches give twice the updates, at a rate
            # that learns in a few dozen of them (sample data, 16 steps: held-out loss 3.71 -> 3.17
            # at batch 4 and 1e-3, -> 3.56 at batch 8 and 2e-4; bench/first_job.py, README).
            values.update(batch_size=SHORT_RUN_BATCH, learning_rate=max(SHORT_RUN_LEARNING_RATE, _default(technique, "learning_rate")))
            steps_per_epoch = steps_per_epoch * int(_default(technique, "batch_size")) // SHORT_RUN_BATCH
        if fits < 1 and steps_per_epoch > QUICK_START_MIN_STEPS:
            values["max_steps"] = max(QUICK_START_MIN_STEPS, int(fits * steps_per_epoch))
    kind = TASK_KINDS.get(task)
    if kind is not None and kind.has_labels:
        values["max_length"] = min(values["max_length"], 256)  # labels need the gist, not the whole text
    names = {p.name for p in technique.all_params}
    chosen = {k: v for k, v in values.items() if k in names}
    if "alpha" in names and "r" in chosen:
        chosen["alpha"] = 2 * chosen["r"]
    if technique.key == "vera":
        chosen["r"] = {"quick": 128, "balanced": 256, "thorough": 512}[preset]
    if technique.key == "adalora" and "r" in chosen:
        chosen["init_r"] = chosen["r"] + chosen["r"] // 2
    return chosen
