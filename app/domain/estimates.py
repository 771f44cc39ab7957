"""Pre-launch estimates (memory, time, trainable parameters, adapter size) from a model's
config.json and the data's size. Plain arithmetic: the web never imports torch."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from app.domain.evaluation_costs import (
    EVALUATION_SETUP_SECONDS,
    answered_rows,
    measured_evaluation_seconds,
    modelled_evaluation_seconds,
)
from app.domain.task_kinds import get_task_kind


def read_model_config(location: str | None) -> dict | None:
    """The config.json of a local model folder, or None when there is none (or it is unreadable)."""
    if not location:
        return None
    path = Path(location) / "config.json"
    try:
        stat = path.stat()
    except OSError:
        return None
    return _read_config(str(path), stat.st_mtime_ns)


@lru_cache(maxsize=64)
def _read_config(path: str, _mtime_ns: int) -> dict | None:
    try:
        config = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) else None


# ---------------------------------------------------------------- model shape from config.json


@dataclass(frozen=True)
class ModelShape:
    hidden: int
    layers: int
    vocab: int
    intermediate: int
    heads: int
    kv_dim: int  # width of the key and value projections (grouped-query attention: < hidden)
    gated_mlp: bool  # Llama-style gate/up/down (three matrices) vs. BERT-style two
    tied_embeddings: bool
    encoder: bool
    max_positions: int

    @property
    def attention_layers(self) -> list[tuple[int, int]]:
        h = self.hidden
        return [(h, h), (h, self.kv_dim), (h, self.kv_dim), (h, h)]

    @property
    def mlp_layers(self) -> list[tuple[int, int]]:
        h, i = self.hidden, self.intermediate
        return [(h, i), (h, i), (i, h)] if self.gated_mlp else [(h, i), (i, h)]

    def linear_layers(self, targets: str = "all-linear") -> list[tuple[int, int]]:
        """(in, out) of every adapted linear layer in the whole model."""
        per_layer = self.attention_layers + ([] if targets == "attention" else self.mlp_layers)
        return per_layer * self.layers

    @property
    def parameters(self) -> int:
        body = sum(i * o for i, o in self.linear_layers()) + self.layers * 4 * self.hidden
        embeddings = self.vocab * self.hidden * (1 if self.tied_embeddings or self.encoder else 2)
        if self.encoder:
            embeddings += (self.max_positions + 2) * self.hidden + self.hidden * self.hidden  # positions, types, pooler
        return body + embeddings

    @property
    def linear_parameters(self) -> int:
        return sum(i * o for i, o in self.linear_layers())


def model_shape(config: dict) -> ModelShape | None:
    """Read the numbers an estimate needs; None when config.json lacks them."""
    try:
        hidden = int(config.get("hidden_size") or config.get("n_embd") or config["d_model"])
        layers = int(config.get("num_hidden_layers") or config.get("n_layer") or config["num_layers"])
        vocab = int(config["vocab_size"])
    except (KeyError, TypeError, ValueError):
        return None
    heads = int(config.get("num_attention_heads") or config.get("n_head") or 1)
    kv_heads = int(config.get("num_key_value_heads") or heads)
    head_dim = int(config.get("head_dim") or hidden // max(1, heads))
    model_type = str(config.get("model_type", ""))
    encoder = model_type in ("bert", "roberta", "distilbert", "xlm-roberta", "electra", "mpnet")
    return ModelShape(
        hidden=hidden,
        layers=layers,
        vocab=vocab,
        intermediate=int(config.get("intermediate_size") or config.get("n_inner") or 4 * hidden),
        heads=heads,
        kv_dim=kv_heads * head_dim,
        gated_mlp=not encoder and model_type not in ("gpt2",),
        tied_embeddings=bool(config.get("tie_word_embeddings", not encoder)),
        encoder=encoder,
        max_positions=int(config.get("max_position_embeddings") or 512),
    )


def _factor(dimension: int) -> tuple[int, int]:
    """PEFT LoKr's factorisation of a dimension into two factors as close to its root as possible."""
    best = (1, dimension)
    for m in range(1, int(math.isqrt(dimension)) + 1):
        if dimension % m == 0:
            best = (m, dimension // m)
    return best


def trainable_parameters(shape: ModelShape, technique: str, params: dict[str, Any], num_labels: int = 0) -> tuple[int, int]:
    """(parameters trained, parameters saved in the adapter file) for a catalogue technique."""
    targets = str(params.get("target_modules", "all-linear"))
    layers = shape.linear_layers(targets)
    r = int(params.get("r", 8))
    head = shape.hidden * num_labels + num_labels + (shape.hidden * shape.hidden + shape.hidden if shape.encoder and num_labels else 0)
    if technique in ("lora", "qlora", "rslora", "dora", "pissa"):
        trained = sum(r * (i + o) for i, o in layers) + (sum(o for _, o in layers) if technique == "dora" else 0)
        saved = trained * 2 if technique == "pissa" else trained  # PiSSA is saved converted: rank 2r
        return trained + head, saved + head
    if technique == "adalora":
        init_r = int(params.get("init_r", r + r // 2))
        trained = sum(init_r * (i + o) + init_r for i, o in layers)
        return trained + head, trained + head
    if technique == "loha":
        trained = sum(2 * r * (i + o) for i, o in layers)
        return trained + head, trained + head
    if technique == "lokr":
        total = 0
        for i, o in layers:
            (m1, m2), (n1, n2) = _factor(o), _factor(i)
            total += m1 * n1 + (r * (m2 + n2) if r < max(m2, n2) / 2 else m2 * n2)
        return total + head, total + head
    if technique == "vera":
        trained = sum(r + o for _, o in layers)
        projections = r * max(i for i, _ in layers) + max(o for _, o in layers) * r
        return trained + head, trained + projections + head
    if technique == "ia3":
        if shape.encoder:
            trained = shape.layers * (2 * shape.hidden + shape.intermediate)
        else:
            trained = shape.layers * (2 * shape.kv_dim + shape.intermediate)
        return trained + head, trained + head
    tokens = int(params.get("num_virtual_tokens", 20))
    if technique == "prompt_tuning":
        return tokens * shape.hidden + head, tokens * shape.hidden + head
    if technique == "prefix_tuning":
        trained = tokens * 2 * shape.layers * shape.kv_dim
        return trained + head, trained + head
    if technique == "p_tuning":
        e = int(params.get("encoder_hidden_size", 128))
        encoder = tokens * shape.hidden + shape.hidden * e + e + e * e + e + e * shape.hidden + shape.hidden
        return encoder + head, tokens * shape.hidden + head
    if technique == "full":
        return shape.parameters + head, shape.parameters + head
    raise ValueError(f"No estimate for technique {technique!r}.")


# ---------------------------------------------------------------- the estimate

# Measured on the 2-core CPU workers (fp32): useful FLOP/s of a training step, counting
# 4 x parameters FLOPs per token for adapters (no weight gradients for the frozen base) and 6 x
# for full fine-tuning. Tiny Llama LoRA ~5,900 tokens/s and SmolLM2-135M LoRA ~230 tokens/s both
# fit ~1.1e11. A GPU worker is assumed to sustain 2e13 (small models are far from peak).
CPU_FLOPS_PER_CORE = 5.5e10
GPU_FLOPS = 2e13
# A real job of the demo model reaches this share of the calibration model's useful FLOP/s (30
# layers, rows of varied length, per-layer overheads and the optimizer over more adapters than the
# calibration's 4 layers of fixed 96-token rows, both in 256-token passes on a CPU). Quiet 2-core
# CPU here, workers' OMP_WAIT_POLICY=PASSIVE: calibration 8.0-9.0e10 FLOP/s, i.e. 148-168 demo
# tokens/s, against 104-117 tokens/s for the demo job's steps (bench/train_throughput.py's engine)
# and 107 in a real first job (bench/first_job.py): 0.64-0.79. Real first jobs then ran 16-19%
# longer than estimated with 0.7 on that machine (runs 8, 9) and on a faster AVX-512/AMX one
# (1.48e11 FLOP/s calibrated, 157-158 tokens/s in four real jobs: 0.57; runs 10-12), so 0.6.
CALIBRATION_TO_JOB = 0.6
# A CPU worker's resident memory before the model: Python, torch, transformers and peft.
CPU_PROCESS_BASELINE_BYTES = 520 * 1024**2
GPU_CONTEXT_BYTES = 500 * 1024**2
CHARS_PER_TOKEN = 3.8
TEMPLATE_TOKENS = 24  # around each instruction row: the demo rows average 89 tokens where chars / 3.8 + 12 gave 78


# The chunked loss (worker/training/chunked_loss.py, CHUNK_VALUES there) holds at most this many
# logits at a time, plus their softmax/gradient, instead of tokens x vocabulary of them.
LOSS_CHUNK_VALUES = 2**23
# Padded tokens per forward pass on a CPU worker when the job's micro_batch_tokens is 0 (automatic;
# worker/training/memory.py): batches are cut into passes of this size, the update unchanged.
CPU_MICRO_BATCH_TOKENS = 256
# A CPU worker's resident set holds more than autograd keeps: freed activations stay in the process
# for a while. How much depends on its allocator (app/worker_environment.py), as a factor on the
# activations, fitted on the demo job's first run on a worker (bench/first_job.py; the estimate's
# activations there are 0.28 GiB over 1.15 GiB of the rest): jemalloc peaked at 1.49-1.50 GiB (1.25),
# glibc's malloc at 1.79-1.84 GiB (2.3; its mmap threshold rises and it keeps the freed heap).
# A worker that has not said which: between the two.
CPU_ALLOCATOR_OVERHEAD = {"jemalloc": 1.25, "system": 2.3}
CPU_ALLOCATOR_OVERHEAD_UNKNOWN = 1.6


@dataclass(frozen=True)
class Measured:
    """What a finished job measured on a worker (app.models.ThroughputMeasurement)."""

    base_model: str
    technique: str
    tokens_per_second: float
    peak_memory_bytes: int
    batch_size: int
    max_length: int
    setup_seconds: float | None = None  # the job's time outside its training steps (load, tokenize, save)
    evaluation_seconds: float | None = None  # its automatic evaluation, when it ran
    evaluation_rows: int | None = None  # the held-out rows that evaluation answered
    evaluation_base_seconds: float | None = None  # of its time, the base model's side (0: cached; None: not recorded)


@dataclass(frozen=True)
class WorkerClass:
    """What the estimate assumes about the worker that takes the job.

    The most specific figure wins: a measurement of the same worker, base model and technique;
    else the worker's own calibrated speed (worker/calibration.py); else the static figures above.
    """

    kind: str  # "cpu" | "cuda"
    cores: int = 2
    memory_bytes: int | None = None
    name: str | None = None
    calibrated_flops: float | None = None
    measurements: tuple[Measured, ...] = ()
    allocator: str | None = None  # "jemalloc" | "system" | None (not reported): the CPU memory estimate's overhead

    @property
    def flops(self) -> float:
        if self.calibrated_flops:
            return self.calibrated_flops * CALIBRATION_TO_JOB
        return GPU_FLOPS if self.kind == "cuda" else CPU_FLOPS_PER_CORE * max(1, self.cores)

    def measured(self, base_model: str | None, technique: str) -> Measured | None:
        """The latest measurement of this worker for this base model and technique (newest first)."""
        return next((m for m in self.measurements if base_model and m.base_model == base_model and m.technique == technique), None)


def worker_class_from_device(
    device: str | None,
    memory_bytes: int | None = None,
    *,
    name: str | None = None,
    calibrated_flops: float | None = None,
    measurements: tuple[Measured, ...] = (),
    allocator: str | None = None,
) -> WorkerClass:
    """Parse a worker's advertised device ("cuda:0 NVIDIA H200", "cpu (16 cores)")."""
    device = device or "cpu (2 cores)"
    extra = dict(name=name, calibrated_flops=calibrated_flops, measurements=measurements, allocator=allocator)
    if device.startswith("cuda"):
        return WorkerClass("cuda", memory_bytes=memory_bytes, **extra)  # type: ignore[arg-type]
    cores = 2
    digits = "".join(ch if ch.isdigit() else " " for ch in device).split()
    if digits:
        cores = int(digits[0])
    return WorkerClass("cpu", cores=cores, memory_bytes=memory_bytes, **extra)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Estimate:
    trainable_parameters: int
    total_parameters: int
    adapter_bytes: int
    peak_memory_bytes: int
    seconds: float  # the job: setup + training steps + held-out checks
    tokens: int  # real (unpadded) tokens trained on
    steps: int
    fits: bool | None  # None when the worker's memory is unknown
    source: str = "static"  # "measured" (this worker, base model, technique) | "calibrated" | "static"
    setup_seconds: float = 0.0  # loading the base model, tokenizing the rows, saving the adapter
    train_seconds: float = 0.0  # the optimizer steps
    held_out_seconds: float = 0.0  # held-out loss checks during training
    evaluation_seconds: float = 0.0  # the automatic evaluation after the job (0 when it is off)
    total_seconds: float = 0.0  # Start training -> an evaluated adapter: seconds + evaluation_seconds
    gradient_checkpointing: bool = False  # activations recomputed in the backward pass ("on", or "auto" where they would not fit)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------- the phases around the steps

# Fitted on the 2-core CPU here with bench/first_job.py (README, "Quick start"): the fixed parts of
# a job and of its evaluation in seconds on a worker whose calibrated speed is REFERENCE_CPU_FLOPS.
# Loading weights, tokenizing and generating are CPU work like the steps, so a worker that
# calibrated slower (or is busier) takes proportionally longer: they are scaled by its speed.
REFERENCE_CPU_FLOPS = 3.1e10
SETUP_SECONDS = 9.0  # build the job's rows, read config and tokenizer, build the adapter, save and zip it
LOAD_SECONDS_PER_PARAMETER = 4 / 400e6  # reading fp32 weights
TOKENIZE_SECONDS_PER_TOKEN = 2e-5


def recompute_needed(peak_without: int, device_memory_bytes: int | None) -> bool:
    """Gradient checkpointing "auto" on a GPU: recompute activations only when the job would not fit
    without (its estimate counts activations in fp32, twice what bf16 keeps: a margin built in);
    on a GPU of unknown size, always. A GPU recomputing needlessly loses about a third of its speed."""
    return device_memory_bytes is None or peak_without > device_memory_bytes * 0.9


def _slowness(worker: WorkerClass, flops: float) -> float:
    """How much longer the CPU-bound fixed parts take on this worker than on the reference one."""
    if worker.kind != "cpu" or flops <= 0:
        return 1.0
    return min(30.0, max(0.2, REFERENCE_CPU_FLOPS / flops))


def setup_cost(parameters: int, rows: int, row_tokens: float, worker_kind: str) -> float:
    """Seconds outside the steps on the reference worker: load the weights, tokenize, save."""
    return SETUP_SECONDS + parameters * LOAD_SECONDS_PER_PARAMETER + rows * row_tokens * TOKENIZE_SECONDS_PER_TOKEN


def evaluation_fixed_seconds(parameters: int, worker: WorkerClass, flops: float) -> float:
    """The evaluation's part that does not grow with the rows: load base and adapter, score, zip."""
    return (EVALUATION_SETUP_SECONDS + parameters * LOAD_SECONDS_PER_PARAMETER) * _slowness(worker, flops)


def held_out_rows(n_rows: int, validation_fraction: float) -> int:
    """The held-out rows of a split of `n_rows` (the estimate's count; the worker's split may differ by a row)."""
    return max(1, n_rows - max(1, n_rows - max(1, round(n_rows * validation_fraction))))


def mean_tokens_per_row(profile: dict | None, task: str, mapping: dict[str, Any]) -> float:
    """Average tokens per row from the dataset profile's mean characters per column."""
    by_name = {c["name"]: c for c in (profile or {}).get("columns", [])}
    kind = get_task_kind(task)
    chars = sum(float(by_name[c].get("mean_chars") or 0) for c in kind.text_columns(mapping) if c in by_name)
    return chars / CHARS_PER_TOKEN + (TEMPLATE_TOKENS if kind.prompted else 2)


def estimate_job(
    config: dict,
    technique: str,
    params: dict[str, Any],
    *,
    task: str,
    n_rows: int,
    tokens_per_row: float,
    worker: WorkerClass = WorkerClass("cpu"),
    num_labels: int = 0,
    quantized_bits: int = 0,
    base_model: str | None = None,
    evaluate: bool = True,
    base_cached: bool = False,
) -> Estimate | None:
    """Peak memory, time, trainable parameters and adapter size of a job; None without a usable config.

    Time is split into what a person waits for from Start training: setup (loading the model,
    tokenizing, saving the adapter), the training steps, the held-out checks during training
    (`seconds` is those three: the job), and with `evaluate` the automatic evaluation after it
    (`total_seconds`: to an evaluated, downloadable adapter); `base_cached`: an earlier job
    evaluated the base model on the same held-out rows, so this evaluation pays for the adapter only.
    """
    shape = model_shape(config)
    if shape is None:
        return None
    kind = get_task_kind(task)
    trained, saved = trainable_parameters(shape, technique, params, num_labels)
    total = shape.parameters
    max_length = int(params.get("max_length", 256))
    batch = int(params.get("batch_size", 8)) * int(params.get("gradient_accumulation_steps", 1))
    n_validation = held_out_rows(n_rows, float(params.get("validation_fraction", 0.1)))
    n_train = max(1, n_rows - n_validation)
    row_tokens = min(float(max_length), max(2.0, tokens_per_row))
    if kind.chunked and tokens_per_row > max_length:  # long texts are cut into several chunks
        chunks = math.ceil(tokens_per_row / max_length)
        n_train, row_tokens = n_train * chunks, tokens_per_row / chunks
    epochs = float(params.get("epochs", 1))
    steps = max(1, math.ceil(n_train / batch) * int(epochs))
    if int(params.get("max_steps", 0) or 0) > 0:
        steps = min(steps, int(params["max_steps"]))
    tokens = int(min(steps * batch, n_train * epochs) * row_tokens)

    virtual = int(params.get("num_virtual_tokens", 0)) if technique in ("prompt_tuning", "p_tuning") else 0
    flops_per_token = (6 if technique == "full" else 4) * total
    step_tokens_factor = (row_tokens + virtual) / row_tokens
    measured = worker.measured(base_model, technique)
    # A measurement of this worker, model and technique gives the useful FLOP/s directly.
    flops = measured.tokens_per_second * flops_per_token * step_tokens_factor if measured else worker.flops
    source = "measured" if measured else "calibrated" if worker.calibrated_flops else "static"
    train_seconds = tokens * step_tokens_factor * flops_per_token / flops
    evals = max(1, int(epochs)) if not int(params.get("eval_steps", 0) or 0) else max(1, steps // int(params["eval_steps"]))
    held_out_seconds = evals * n_validation * row_tokens * 2 * total / flops
    slowness = _slowness(worker, flops)
    setup_seconds = (
        measured.setup_seconds
        if measured and measured.setup_seconds is not None
        else setup_cost(total, n_rows + n_validation, row_tokens, worker.kind) * slowness
    )
    evaluation_seconds = 0.0
    if evaluate:
        fixed = evaluation_fixed_seconds(total, worker, flops)
        if measured and measured.evaluation_seconds is not None and measured.evaluation_rows:
            # The same worker evaluated an adapter of this base model: its time per answered row.
            evaluation_seconds = measured_evaluation_seconds(
                measured.evaluation_seconds,
                measured.evaluation_rows,
                measured.evaluation_base_seconds,
                answered_rows(n_validation, worker.kind) if kind.generative else n_validation,  # a classifier reads every row
                fixed,
                base_cached=base_cached,
                base_side=kind.generative,
            )
        else:
            evaluation_seconds = modelled_evaluation_seconds(
                total, kind, n_validation, row_tokens, worker.kind, flops, fixed, base_cached=base_cached
            )
    seconds = setup_seconds + train_seconds + held_out_seconds

    # Memory: weights + trained state (weights, gradients, two Adam moments) + activations.
    bytes_per_weight = 4 if worker.kind == "cpu" else 2
    if quantized_bits:
        weights = shape.linear_parameters * quantized_bits / 8 * 1.07 + (total - shape.linear_parameters) * 4
    else:
        weights = total * bytes_per_weight
    state = trained * 16
    micro_batch = int(params.get("batch_size", 8))
    # Length-grouped batches pad only to the longest of similar rows: ~1.15 x the mean.
    sequence = min(max_length, row_tokens * 1.15) + virtual
    # One forward pass holds at most the token budget (micro_batch_tokens; automatic on a CPU).
    budget = int(params.get("micro_batch_tokens", 0) or 0) or (CPU_MICRO_BATCH_TOKENS if worker.kind == "cpu" else 0)
    pass_tokens = micro_batch * sequence if not budget else min(micro_batch * sequence, max(float(budget), sequence))
    checkpointing = str(params.get("gradient_checkpointing", "auto"))
    # Values kept per token and layer for the backward pass (LoRA step, fused dropout and gated MLP,
    # worker/training/lora_dropout.py and swiglu.py): the hidden-sized inputs, q/k/v, attention
    # output, the MLP's gate and up (or its one intermediate) and product: 1.18e6 bytes per token
    # on SmolLM2-135M, as measured there with saved-tensor hooks.
    mlp = 3 * shape.intermediate if shape.gated_mlp else 2 * shape.intermediate
    per_layer = 9 * shape.hidden + mlp + 2 * shape.heads
    # The chunked loss: one chunk's logits and softmax, the kept hidden states and their gradient.
    logits = (2 * LOSS_CHUNK_VALUES * 4 + pass_tokens * shape.hidden * 4 * 2) if kind.generative else 0
    baseline = CPU_PROCESS_BASELINE_BYTES if worker.kind == "cpu" else GPU_CONTEXT_BYTES

    def peak_with(layers_kept: int, recompute: bool) -> int:
        activations = pass_tokens * (per_layer * layers_kept + (shape.hidden * 2 if recompute else 0)) * 4
        if worker.kind == "cpu":
            activations *= CPU_ALLOCATOR_OVERHEAD.get(worker.allocator or "", CPU_ALLOCATOR_OVERHEAD_UNKNOWN)
        # The weights are read from memory-mapped safetensors: loading holds no second copy.
        return int(baseline + weights + state + activations + logits)

    if checkpointing == "auto" and worker.kind == "cuda":
        checkpointing = "on" if recompute_needed(peak_with(shape.layers, False), worker.memory_bytes) else "off"
    peak = peak_with(1 if checkpointing == "on" else shape.layers, checkpointing != "off")
    if measured and measured.batch_size == micro_batch and measured.max_length == max_length:
        peak = measured.peak_memory_bytes  # the same shape of job ran on this worker
    fits = None if worker.memory_bytes is None else peak <= worker.memory_bytes * 0.9
    return Estimate(
        trainable_parameters=int(trained),
        total_parameters=int(total),
        adapter_bytes=int(saved * 4 + 4096),
        peak_memory_bytes=peak,
        seconds=float(seconds),
        tokens=tokens,
        setup_seconds=float(setup_seconds),
        train_seconds=float(train_seconds),
        held_out_seconds=float(held_out_seconds),
        evaluation_seconds=float(evaluation_seconds),
        total_seconds=float(seconds + evaluation_seconds),
        steps=steps,
        fits=fits,
        source=source,
        gradient_checkpointing=checkpointing == "on",
    )
