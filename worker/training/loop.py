"""The training loop: spec in, adapter on disk and a TrainingResult out.

An own loop rather than HF Trainer, so progress, cancel and (later) checkpoints are plain
function calls. Each piece (planning, one micro-step, one optimizer step, evaluation, saving)
is a small function so resume-from-checkpoint can reuse them.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import platform
import random
import resource
import shutil
import tempfile
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from transformers import set_seed

from worker.training.data import (
    IGNORE_INDEX,
    TokenizedExample,
    collate,
    label_names_of,
    length_grouped_batches,
    pack_examples,
    pad_token_id,
    tokenize_for_task,
)
from worker.training.loading import load_base_model, pick_device, training_dtype
from worker.training.peft_factory import (
    FULL_FINE_TUNING,
    PROMPT_LEARNING_TECHNIQUES,
    BuildContext,
    build_peft_model,
    quantization_bits,
)
from worker.training.spec import (
    Progress,
    TrainingCallbacks,
    TrainingResult,
    TrainingSpec,
    resolve_params,
)


@dataclass(frozen=True)
class StepPlan:
    """How many optimizer steps the run makes, and how many of them warm up."""

    micro_batches_per_epoch: int
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int


@dataclass
class LoopState:
    """What a checkpoint carries besides model, optimizer and random-generator state."""

    step: int = 0
    epoch: int = 0
    epoch_step: int = 0  # optimizer steps already done in the current epoch
    tokens_seen: int = 0
    step_losses: list[float] = field(default_factory=list)
    train_seconds: float = 0.0
    best_validation_loss: float | None = None
    checks_without_improvement: int = 0
    resumed_from_step: int = 0
    eval_seconds: float = 0.0  # spent measuring held-out loss inside the loop (not training)


@dataclass
class TrainingRun:
    """The result plus the trained model and tokenizer (for callers that evaluate next)."""

    result: TrainingResult
    model: Any
    tokenizer: Any


def plan_steps(n_examples: int, params: dict[str, Any]) -> StepPlan:
    """Steps per epoch and in total from the data size, epochs, accumulation and max_steps."""
    micro_batches = math.ceil(n_examples / int(params["batch_size"]))
    accumulation = max(1, int(params["gradient_accumulation_steps"]))
    steps_per_epoch = max(1, math.ceil(micro_batches / accumulation))
    total = max(1, math.ceil(steps_per_epoch * float(params["epochs"])))
    if int(params["max_steps"]) > 0:
        total = min(total, int(params["max_steps"]))
    warmup = min(total - 1, math.ceil(float(params["warmup_ratio"]) * total))
    return StepPlan(micro_batches, steps_per_epoch, total, max(0, warmup))


def lr_factor(step_index: int, plan: StepPlan) -> float:
    """Linear warm-up then linear decay; step_index is 0-based and no step gets a zero rate."""
    if step_index < plan.warmup_steps:
        return (step_index + 1) / (plan.warmup_steps + 1)
    decay_steps = plan.total_steps - plan.warmup_steps
    return max(0.0, (plan.total_steps - step_index) / decay_steps)


def seed_everything(seed: int) -> None:
    """Python, NumPy and torch (all devices) random generators."""
    set_seed(seed)


def reset_peak_memory(device: torch.device) -> None:
    """Start peak-memory accounting afresh for this run (a worker process runs many jobs)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:  # Linux: writing 5 to clear_refs resets the peak resident set (VmHWM) of this process
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_memory_bytes(device: torch.device) -> int:
    """GPU: peak allocated by torch. CPU: the process's peak resident set since the last reset."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux reports KiB


def epoch_step_groups(
    examples: Sequence[TokenizedExample], params: dict[str, Any], seed: int, epoch: int
) -> list[list[list[int]]]:
    """One epoch as optimizer steps, each a list of micro-batches of example indices."""
    lengths = [len(example) for example in examples]
    epoch_seed = seed * 100_003 + epoch  # a different, reproducible order every epoch
    batches = length_grouped_batches(lengths, int(params["batch_size"]), seed=epoch_seed)
    accumulation = max(1, int(params["gradient_accumulation_steps"]))
    return [batches[i : i + accumulation] for i in range(0, len(batches), accumulation)]


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
    if "position_ids" in batch:
        # Packed rows: no 2-D mask, so the model builds a block-diagonal one from the positions.
        logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
    else:
        logits = model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False
        ).logits
    # Prompt tuning and P-tuning put virtual tokens in front: keep the positions of real tokens.
    logits = logits[:, -batch["input_ids"].size(1) :, :]
    shifted_logits = logits[:, :-1, :].float()
    shifted_labels = batch["labels"][:, 1:]
    return F.cross_entropy(
        shifted_logits.reshape(-1, shifted_logits.size(-1)),
        shifted_labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )


@dataclass
class Precision:
    """Autocast dtype (None = plain fp32) and the fp16 loss scaler."""

    dtype: torch.dtype | None = None
    scaler: Any = None

    def autocast(self, device):
        if self.dtype is None:
            return nullcontext()
        return torch.autocast(device_type=torch.device(device).type, dtype=self.dtype)


FP32 = Precision()


def micro_step(model, batch: dict[str, torch.Tensor], window_tokens: int, precision: Precision = FP32,
               device="cpu") -> float:
    """Forward + backward of one micro-batch, weighted by its share of the step's tokens."""
    with precision.autocast(device):
        loss_sum = batch_loss_sum(model, batch)
    loss = loss_sum / window_tokens
    (precision.scaler.scale(loss) if precision.scaler is not None else loss).backward()
    return float(loss_sum.detach())


def accumulate_gradients(
    model, batches: list[dict[str, torch.Tensor]], device, state: LoopState,
    callbacks: TrainingCallbacks, precision: Precision = FP32,
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
        loss_sum += micro_step(model, _to_device(batch, device), window_tokens, precision, device)
        state.tokens_seen += int(batch["attention_mask"].sum())  # real tokens, not padding
    return loss_sum / window_tokens


def optimizer_step(optimizer, scheduler, trainable: list[torch.nn.Parameter], precision: Precision = FP32,
                   after_step=None) -> tuple[float, float]:
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


@torch.no_grad()
def evaluate_loss(
    model, examples: Sequence[TokenizedExample], batch_size: int, pad_id: int, device,
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
        batch = _to_device(collate([examples[i] for i in indices], pad_id), device)
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
        batch = _to_device(collate(examples[start : start + batch_size], pad_id), device)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        right += int((logits.argmax(-1) == batch["labels"]).sum())
    if was_training:
        model.train()
    return right / len(examples)


LABELS_FILE = "tailor_labels.json"


def save_adapter(model, output_dir: str | os.PathLike, *, tokenizer=None, label_names=None,
                 pissa_init_dir: str | os.PathLike | None = None) -> Path:
    """Save adapter_config.json + adapter_model.safetensors, never leaving a half-written folder.

    A full fine-tune saves the whole model and its tokenizer instead; a PiSSA adapter is converted
    to plain LoRA (against `pissa_init_dir`) so it loads on the unchanged base model; a classifier
    gets its label map in tailor_labels.json.
    """
    output_dir = Path(output_dir)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.partial-", dir=output_dir.parent))
    try:
        tmp_dir.chmod(0o755)  # mkdtemp makes it private; the final folder should not be
        if pissa_init_dir is not None:
            model.save_pretrained(str(tmp_dir), safe_serialization=True,
                                  path_initial_model_for_weight_conversion=str(pissa_init_dir))
        else:
            model.save_pretrained(str(tmp_dir), safe_serialization=True)
        if not hasattr(model, "peft_config") and tokenizer is not None:
            tokenizer.save_pretrained(str(tmp_dir))
        if label_names is not None:
            (tmp_dir / LABELS_FILE).write_text(json.dumps(
                {"id2label": {str(i): name for i, name in enumerate(label_names)}}, indent=2))
        if output_dir.is_dir() and not any(output_dir.iterdir()):
            output_dir.rmdir()
        if not output_dir.exists():
            os.replace(tmp_dir, output_dir)
        else:
            # Folder already holds other files: move ours in one by one, config last, so a
            # reader that sees the config also sees the weights.
            names = sorted(os.listdir(tmp_dir), key=lambda name: name in ("adapter_config.json", "config.json"))
            for name in names:
                os.replace(tmp_dir / name, output_dir / name)
            tmp_dir.rmdir()
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    return output_dir


def _to_device(batch: dict[str, torch.Tensor], device) -> dict[str, torch.Tensor]:
    return {key: value.to(device) for key, value in batch.items()}


def _report_progress(
    callbacks: TrainingCallbacks, state: LoopState, plan: StepPlan, loss: float,
    learning_rate: float, started: float, *, grad_norm: float | None = None,
    validation_loss: float | None = None, device=None, elapsed_before: float = 0.0,
    tokens_before: int = 0, eval_before: float = 0.0,
) -> None:
    session = time.perf_counter() - started
    elapsed = elapsed_before + session
    training_session = max(1e-9, session - (state.eval_seconds - eval_before))
    steps_this_session = state.step - state.resumed_from_step
    callbacks.on_progress(
        Progress(
            step=state.step,
            total_steps=plan.total_steps,
            epoch=state.step / plan.steps_per_epoch,
            loss=loss,
            learning_rate=learning_rate,
            # This session's speed: a resumed run's earlier tokens were counted in their own time.
            # Held-out evaluations are not training: they count neither tokens nor time here.
            tokens_per_second=(state.tokens_seen - tokens_before) / training_session,
            elapsed_seconds=elapsed,
            eta_seconds=session / max(1, steps_this_session) * (plan.total_steps - state.step),
            grad_norm=grad_norm,
            validation_loss=validation_loss,
            memory_bytes=peak_memory_bytes(device) if device is not None else None,
        )
    )


def _recent_train_loss(state: LoopState, plan: StepPlan) -> float | None:
    """Mean step loss over the last epoch's worth of steps (the last pass over the data)."""
    if not state.step_losses:
        return None
    recent = state.step_losses[-plan.steps_per_epoch :]
    return sum(recent) / len(recent)


# --- checkpoints ------------------------------------------------------------------------------

CHECKPOINT_FILE = "checkpoint.pt"


def _trainable_state(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().cpu().clone() for name, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(checkpoint_dir: str | os.PathLike, model, optimizer, scheduler, state: LoopState,
                    precision: Precision = FP32) -> Path:
    """Trainable weights, optimizer, schedule, loop state and random generators, written atomically."""
    checkpoint_dir = Path(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    payload = {
        "weights": _trainable_state(model),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": precision.scaler.state_dict() if precision.scaler is not None else None,
        "state": asdict(state),
        "rng": {
            "torch": torch.random.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "python": random.getstate(),
            "numpy": _numpy_state_as_tensors(np.random.get_state()),
        },
    }
    tmp = checkpoint_dir / f".{CHECKPOINT_FILE}.partial"
    try:
        torch.save(payload, tmp)
    except Exception as exc:
        tmp.unlink(missing_ok=True)
        # torch's zip writer reports a full disk as "unexpected pos ..."; say what it is.
        if shutil.disk_usage(checkpoint_dir).free < 1024 * 1024:
            raise OSError(errno.ENOSPC, f"No space left on device while writing a checkpoint in {checkpoint_dir}") from exc
        raise
    os.replace(tmp, checkpoint_dir / CHECKPOINT_FILE)
    return checkpoint_dir / CHECKPOINT_FILE


def _numpy_state_as_tensors(state: tuple) -> tuple:
    """numpy's generator state with its key array as a tensor, so the checkpoint loads with
    torch.load(weights_only=True), which refuses pickled numpy arrays."""
    name, keys, position, has_gauss, cached_gaussian = state
    return name, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(cached_gaussian)


def _numpy_state_from_tensors(state: tuple) -> tuple:
    name, keys, position, has_gauss, cached_gaussian = state
    return name, keys.numpy().astype(np.uint32), position, has_gauss, cached_gaussian


def load_checkpoint(checkpoint_dir: str | os.PathLike, model, optimizer, scheduler,
                    precision: Precision = FP32) -> LoopState | None:
    """Restore everything save_checkpoint wrote; None when there is no checkpoint."""
    path = Path(checkpoint_dir) / CHECKPOINT_FILE
    if not path.is_file():
        return None
    # Tensors and plain values only: even a tampered checkpoint cannot run code when loaded.
    payload = torch.load(path, map_location="cpu", weights_only=True)
    parameters = dict(model.named_parameters())
    missing = [name for name in payload["weights"] if name not in parameters]
    if missing:
        raise ValueError(f"The checkpoint does not match this model (e.g. {missing[0]}); delete {path} to start over.")
    with torch.no_grad():
        for name, value in payload["weights"].items():
            parameters[name].copy_(value.to(parameters[name].device))
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    if precision.scaler is not None and payload.get("scaler"):
        precision.scaler.load_state_dict(payload["scaler"])
    torch.random.set_rng_state(payload["rng"]["torch"])
    if payload["rng"].get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(payload["rng"]["cuda"])
    random.setstate(payload["rng"]["python"])
    np.random.set_state(_numpy_state_from_tensors(payload["rng"]["numpy"]))
    return LoopState(**payload["state"])


# --- reproducibility --------------------------------------------------------------------------

def data_fingerprint(task: str, train_rows, validation_rows) -> str:
    """SHA-256 of the exact rows a run learned from and was measured on."""
    blob = json.dumps([task, [list(r) if isinstance(r, (tuple, list)) else r for r in train_rows],
                       [list(r) if isinstance(r, (tuple, list)) else r for r in validation_rows]],
                      ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def environment_record(device, dtype) -> dict[str, Any]:
    """Package versions and hardware: what someone needs to rerun the job the same way."""
    versions = {}
    for package in ("torch", "transformers", "peft", "bitsandbytes", "accelerate", "tokenizers", "safetensors", "numpy"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    record = {"python": platform.python_version(), "packages": versions, "device": str(device),
              "dtype": str(dtype).replace("torch.", "")}
    if torch.device(device).type == "cuda":
        record["gpu"] = torch.cuda.get_device_name(device)
    return record


# --- the run ----------------------------------------------------------------------------------

def _precision_for(params: dict[str, Any], device, technique: str) -> tuple[torch.dtype, Precision]:
    """(dtype to load the base model in, autocast settings). Full fine-tuning keeps fp32 weights."""
    dtype = training_dtype(str(params.get("precision", "auto")), device)
    if dtype == torch.float32:
        return torch.float32, FP32
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    load_dtype = torch.float32 if technique == FULL_FINE_TUNING else dtype
    return load_dtype, Precision(dtype=dtype, scaler=scaler)


def packing_applies(params: dict[str, Any], task: str, technique: str) -> bool:
    """Packing is asked for, and safe: causal tasks, techniques that add no virtual tokens or cache."""
    return (str(params.get("packing", "off")) == "on" and task != "classification"
            and technique not in PROMPT_LEARNING_TECHNIQUES)


def _wants_gradient_checkpointing(params: dict[str, Any], device) -> bool:
    choice = str(params.get("gradient_checkpointing", "auto"))
    return choice == "on" or (choice == "auto" and torch.device(device).type == "cuda")


def _trainable_counts(model) -> tuple[int, int]:
    if hasattr(model, "get_nb_trainable_parameters"):
        return model.get_nb_trainable_parameters()
    total = sum(p.numel() for p in model.parameters())
    return sum(p.numel() for p in model.parameters() if p.requires_grad), total


def run_training(spec: TrainingSpec, callbacks: TrainingCallbacks) -> TrainingRun:
    """Train and save the adapter (unless cancelled); also return the in-memory model.

    With `spec.checkpoint_dir` the run checkpoints every `checkpoint_minutes` and, when a
    checkpoint is already there, resumes from it (same seed, same data -> the same adapter).
    """
    params = resolve_params(spec.technique, spec.params)
    task = spec.task
    seed_everything(spec.seed)
    device = pick_device()
    reset_peak_memory(device)
    load_dtype, precision = _precision_for(params, device, spec.technique)

    label_names = label_names_of(list(spec.train_rows) + list(spec.validation_rows)) if task == "classification" else None
    if label_names is not None and len(label_names) < 2:
        raise ValueError("Classification needs at least two different labels in the label column.")
    base_model, tokenizer = load_base_model(
        spec.base_model_dir, device, task=task, label_names=label_names,
        quantization_bits=quantization_bits(spec.technique, params), dtype=load_dtype,
    )
    max_length = int(params["max_length"])
    train_examples = tokenize_for_task(tokenizer, task, spec.train_rows, max_length, label_names).examples
    validation_examples = tokenize_for_task(tokenizer, task, spec.validation_rows, max_length, label_names).examples
    if not train_examples:
        raise ValueError(
            f"No training row fits in max_length={max_length} tokens; raise max_length "
            "or shorten the prompts."
        )
    pad_id = pad_token_id(tokenizer)
    if packing_applies(params, task, spec.technique):
        train_examples = pack_examples(train_examples, max_length)
    plan = plan_steps(len(train_examples), params)

    seed_everything(spec.seed)  # adapter initialisation does not depend on how loading went
    context = BuildContext(task=task, total_steps=plan.total_steps, tokenizer_dir=str(spec.base_model_dir))
    model = build_peft_model(base_model, spec.technique, params, context)
    pissa_init_dir = None
    if spec.technique == "pissa":
        # Keep the starting adapter, so the trained one can be converted to plain LoRA that
        # loads on the unchanged base model.
        pissa_init_dir = Path(tempfile.mkdtemp(prefix="pissa-init-"))
        model.peft_config["default"].init_lora_weights = True
        model.save_pretrained(str(pissa_init_dir))
        model.peft_config["default"].init_lora_weights = "pissa_niter_4"
    if _wants_gradient_checkpointing(params, device):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if hasattr(model, "enable_input_require_grads"):
            model.enable_input_require_grads()
    model.train()

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=float(params["learning_rate"]), weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: lr_factor(i, plan))
    trainable_count, total_count = _trainable_counts(model)
    after_step = None
    if spec.technique == "adalora":
        def after_step():  # noqa: E306 - AdaLoRA reallocates ranks from the fresh gradients
            model.base_model.update_and_allocate(state.step)

    state = LoopState()
    if spec.checkpoint_dir:
        restored = load_checkpoint(spec.checkpoint_dir, model, optimizer, scheduler, precision)
        if restored is not None:
            state = restored
            state.resumed_from_step = state.step
    eval_every = int(params["eval_steps"]) or plan.steps_per_epoch
    patience = int(params["early_stopping_patience"])
    checkpoint_seconds = float(params["checkpoint_minutes"]) * 60
    elapsed_before, tokens_before, eval_before = state.train_seconds, state.tokens_seen, state.eval_seconds
    final_validation_loss = None
    started = last_checkpoint = time.perf_counter()
    status = "completed"
    stopped_early = False
    while state.step < plan.total_steps and status == "completed" and not stopped_early:
        groups = epoch_step_groups(train_examples, params, spec.seed, state.epoch)
        for group in groups[state.epoch_step :]:
            batches = [collate([train_examples[i] for i in idx], pad_id) for idx in group]
            step_loss = accumulate_gradients(model, batches, device, state, callbacks, precision)
            if step_loss is None:
                status = "cancelled"
                break
            learning_rate, grad_norm = optimizer_step(optimizer, scheduler, trainable, precision, after_step)
            state.step += 1
            state.epoch_step += 1
            state.step_losses.append(step_loss)
            validation_loss = None
            if validation_examples and (state.step % eval_every == 0 or state.step >= plan.total_steps):
                eval_started = time.perf_counter()
                validation_loss = evaluate_loss(model, validation_examples, int(params["batch_size"]), pad_id, device, precision)
                state.eval_seconds += time.perf_counter() - eval_started
                final_validation_loss = validation_loss
                if state.best_validation_loss is None or validation_loss < state.best_validation_loss - 1e-6:
                    state.best_validation_loss = validation_loss
                    state.checks_without_improvement = 0
                else:
                    state.checks_without_improvement += 1
                    stopped_early = patience > 0 and state.checks_without_improvement >= patience
            _report_progress(callbacks, state, plan, step_loss, learning_rate, started, grad_norm=grad_norm,
                             validation_loss=validation_loss, device=device, elapsed_before=elapsed_before,
                             tokens_before=tokens_before, eval_before=eval_before)
            now = time.perf_counter()
            if (spec.checkpoint_dir and checkpoint_seconds > 0 and now - last_checkpoint >= checkpoint_seconds
                    and state.step < plan.total_steps and not stopped_early):
                state.train_seconds = elapsed_before + now - started
                save_checkpoint(spec.checkpoint_dir, model, optimizer, scheduler, state, precision)
                if hasattr(callbacks, "on_checkpoint"):
                    callbacks.on_checkpoint()
                last_checkpoint = time.perf_counter()
            if state.step >= plan.total_steps or stopped_early:
                break
        else:
            state.epoch += 1
            state.epoch_step = 0
    state.train_seconds = elapsed_before + time.perf_counter() - started

    validation_loss = None
    accuracy = None
    if status == "completed":
        # The loop measured the final weights already unless it stopped early between checks.
        validation_loss = final_validation_loss if state.step_losses and final_validation_loss is not None and (
            state.step >= plan.total_steps) else evaluate_loss(
            model, validation_examples, int(params["batch_size"]), pad_id, device, precision
        )
        accuracy = evaluate_accuracy(model, validation_examples, int(params["batch_size"]), pad_id, device)
        save_adapter(model, spec.output_dir, tokenizer=tokenizer, label_names=label_names,
                     pissa_init_dir=pissa_init_dir)
    if pissa_init_dir is not None:
        shutil.rmtree(pissa_init_dir, ignore_errors=True)

    result = TrainingResult(
        status=status,
        steps=state.step,
        train_loss=_recent_train_loss(state, plan),
        validation_loss=validation_loss,
        trainable_parameters=int(trainable_count),
        total_parameters=int(total_count),
        train_seconds=state.train_seconds,
        tokens_seen=state.tokens_seen,
        peak_memory_bytes=peak_memory_bytes(device),
        best_validation_loss=state.best_validation_loss,
        eval_seconds=state.eval_seconds,
        stopped_early=stopped_early,
        resumed_from_step=state.resumed_from_step,
        data_sha256=data_fingerprint(task, spec.train_rows, spec.validation_rows),
        environment=environment_record(device, precision.dtype or load_dtype),
        label_names=label_names,
        validation_accuracy=accuracy,
    )
    return TrainingRun(result=result, model=model, tokenizer=tokenizer)


def train(spec: TrainingSpec, callbacks: TrainingCallbacks) -> TrainingResult:
    """Train `spec` with progress and cancel through `callbacks`; saves the adapter if completed."""
    return run_training(spec, callbacks).result
