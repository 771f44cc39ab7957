"""The training loop: spec in, adapter on disk and a TrainingResult out.

An own loop rather than HF Trainer, so progress, cancel and (later) checkpoints are plain
function calls. Each piece (planning, one micro-step, one optimizer step, evaluation, saving)
is a small function so resume-from-checkpoint can reuse them.
"""

from __future__ import annotations

import math
import os
import resource
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from transformers import set_seed

from worker.training.data import (
    IGNORE_INDEX,
    TokenizedExample,
    collate,
    length_grouped_batches,
    pad_token_id,
    tokenize_rows,
)
from worker.training.loading import load_base_model, pick_device
from worker.training.peft_factory import build_peft_model
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
    """What a checkpoint would need to carry besides model and optimizer state."""

    step: int = 0
    epoch: int = 0
    tokens_seen: int = 0
    step_losses: list[float] = field(default_factory=list)
    train_seconds: float = 0.0


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
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_bytes(device: torch.device) -> int:
    """GPU: peak allocated by torch. CPU: the process's peak resident set (whole lifetime)."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
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
    """Label tokens that enter the loss (after the one-position shift)."""
    return int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())


def batch_loss_sum(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Summed next-token cross-entropy over the batch's response tokens."""
    logits = model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False
    ).logits
    shifted_logits = logits[:, :-1, :].float()
    shifted_labels = batch["labels"][:, 1:]
    return F.cross_entropy(
        shifted_logits.reshape(-1, shifted_logits.size(-1)),
        shifted_labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )


def micro_step(model, batch: dict[str, torch.Tensor], window_tokens: int) -> float:
    """Forward + backward of one micro-batch, weighted by its share of the step's tokens."""
    loss_sum = batch_loss_sum(model, batch)
    (loss_sum / window_tokens).backward()
    return float(loss_sum.detach())


def accumulate_gradients(
    model, batches: list[dict[str, torch.Tensor]], device, state: LoopState,
    callbacks: TrainingCallbacks,
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
        loss_sum += micro_step(model, _to_device(batch, device), window_tokens)
        state.tokens_seen += int(batch["attention_mask"].sum())  # real tokens, not padding
    return loss_sum / window_tokens


def optimizer_step(optimizer, scheduler, trainable: list[torch.nn.Parameter]) -> float:
    """Clip, step and advance the schedule; returns the learning rate the step used."""
    torch.nn.utils.clip_grad_norm_(trainable, max_norm=1.0)
    learning_rate = float(optimizer.param_groups[0]["lr"])
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return learning_rate


@torch.no_grad()
def evaluate_loss(
    model, examples: Sequence[TokenizedExample], batch_size: int, pad_id: int, device
) -> float | None:
    """Mean cross-entropy per response token over all examples (None when there are none)."""
    if not examples:
        return None
    was_training = model.training
    model.eval()
    total_loss, total_tokens = 0.0, 0
    for indices in length_grouped_batches([len(e) for e in examples], batch_size, seed=0):
        batch = _to_device(collate([examples[i] for i in indices], pad_id), device)
        total_loss += float(batch_loss_sum(model, batch))
        total_tokens += predicted_token_count(batch)
    if was_training:
        model.train()
    return total_loss / max(1, total_tokens)


def save_adapter(model, output_dir: str | os.PathLike) -> Path:
    """Save adapter_config.json + adapter_model.safetensors, never leaving a half-written folder."""
    output_dir = Path(output_dir)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.partial-", dir=output_dir.parent))
    try:
        tmp_dir.chmod(0o755)  # mkdtemp makes it private; the final folder should not be
        model.save_pretrained(str(tmp_dir), safe_serialization=True)
        if output_dir.is_dir() and not any(output_dir.iterdir()):
            output_dir.rmdir()
        if not output_dir.exists():
            os.replace(tmp_dir, output_dir)
        else:
            # Folder already holds other files: move ours in one by one, config last, so a
            # reader that sees the config also sees the weights.
            names = sorted(os.listdir(tmp_dir), key=lambda name: name == "adapter_config.json")
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
    learning_rate: float, started: float,
) -> None:
    elapsed = time.perf_counter() - started
    callbacks.on_progress(
        Progress(
            step=state.step,
            total_steps=plan.total_steps,
            epoch=state.step / plan.steps_per_epoch,
            loss=loss,
            learning_rate=learning_rate,
            tokens_per_second=state.tokens_seen / elapsed if elapsed > 0 else 0.0,
            elapsed_seconds=elapsed,
            eta_seconds=elapsed / state.step * (plan.total_steps - state.step),
        )
    )


def _recent_train_loss(state: LoopState, plan: StepPlan) -> float | None:
    """Mean step loss over the last epoch's worth of steps (the last pass over the data)."""
    if not state.step_losses:
        return None
    recent = state.step_losses[-plan.steps_per_epoch :]
    return sum(recent) / len(recent)


def run_training(spec: TrainingSpec, callbacks: TrainingCallbacks) -> TrainingRun:
    """Train and save the adapter (unless cancelled); also return the in-memory model."""
    params = resolve_params(spec.params)
    seed_everything(spec.seed)
    device = pick_device()
    reset_peak_memory(device)

    base_model, tokenizer = load_base_model(spec.base_model_dir, device)
    model = build_peft_model(base_model, spec.technique, params)
    model.train()
    max_length = int(params["max_length"])
    train_examples = tokenize_rows(tokenizer, spec.train_rows, max_length).examples
    validation_examples = tokenize_rows(tokenizer, spec.validation_rows, max_length).examples
    if not train_examples:
        raise ValueError(
            f"No training row fits in max_length={max_length} tokens; raise max_length "
            "or shorten the prompts."
        )
    pad_id = pad_token_id(tokenizer)

    plan = plan_steps(len(train_examples), params)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=float(params["learning_rate"]), weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: lr_factor(i, plan))
    trainable_count, total_count = model.get_nb_trainable_parameters()

    state = LoopState()
    started = time.perf_counter()
    status = "completed"
    while state.step < plan.total_steps and status == "completed":
        for group in epoch_step_groups(train_examples, params, spec.seed, state.epoch):
            batches = [collate([train_examples[i] for i in idx], pad_id) for idx in group]
            step_loss = accumulate_gradients(model, batches, device, state, callbacks)
            if step_loss is None:
                status = "cancelled"
                break
            learning_rate = optimizer_step(optimizer, scheduler, trainable)
            state.step += 1
            state.step_losses.append(step_loss)
            _report_progress(callbacks, state, plan, step_loss, learning_rate, started)
            if state.step >= plan.total_steps:
                break
        state.epoch += 1
    state.train_seconds = time.perf_counter() - started

    validation_loss = None
    if status == "completed":
        validation_loss = evaluate_loss(
            model, validation_examples, int(params["batch_size"]), pad_id, device
        )
        save_adapter(model, spec.output_dir)

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
    )
    return TrainingRun(result=result, model=model, tokenizer=tokenizer)


def train(spec: TrainingSpec, callbacks: TrainingCallbacks) -> TrainingResult:
    """Train `spec` with progress and cancel through `callbacks`; saves the adapter if completed."""
    return run_training(spec, callbacks).result
