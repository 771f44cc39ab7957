"""Plain data types passed between the worker task and the training pipeline (no torch)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from app.domain.task_kinds import DEFAULT_TASK
from app.domain.techniques import get_technique


def resolve_params(technique: str, params: dict[str, Any] | None) -> dict[str, Any]:
    """The technique's catalogue defaults (app/domain/techniques.py, the one source of defaults)
    overlaid with `params`; unknown keys are kept. Raises ValueError for an unknown technique."""
    merged = get_technique(technique).defaults()
    merged.update(params or {})
    return merged


@dataclass(frozen=True)
class TrainingSpec:
    """Everything one training run needs; built by the worker task from database rows."""

    base_model_dir: str  # local HF folder (config.json, *.safetensors, tokenizer files)
    technique: str  # key of worker.training.peft_factory.BUILDERS, e.g. "lora"
    params: dict  # already validated; resolve_params fills the technique's defaults
    # Rows in the shape of the task kind (app/domain/task_kinds.py, TaskKind.row_shape); a text
    # task also takes plain strs.
    train_rows: list
    validation_rows: list
    output_dir: str  # where the adapter is saved
    seed: int = 0
    task: str = DEFAULT_TASK
    checkpoint_dir: str | None = None  # checkpoints go here, and a run resumes from the last one
    # Where validation_rows come from (split share or a validation file), their count and the
    # leakage check; recorded with the job's result, not used by the training itself.
    validation_source: dict = field(default_factory=dict)
    # Continue from this adapter (a folder saved by save_pretrained): the new adapter starts as its
    # weights, and preference tuning's reference is this adapter.
    parent_adapter_dir: str | None = None


@dataclass
class Progress:
    """One optimizer step's numbers, reported through TrainingCallbacks.on_progress."""

    step: int
    total_steps: int
    epoch: float
    loss: float
    learning_rate: float
    tokens_per_second: float
    elapsed_seconds: float
    eta_seconds: float
    grad_norm: float | None = None
    validation_loss: float | None = None  # set on the steps where the held-out rows were measured
    memory_bytes: int | None = None
    extras: dict[str, float] = field(default_factory=dict)  # a task kind's own numbers (chosen/rejected log-probs)


@dataclass
class TrainingResult:
    """The outcome of one run; status is "completed" or "cancelled"."""

    status: str
    steps: int
    train_loss: float | None
    validation_loss: float | None
    trainable_parameters: int
    total_parameters: int
    train_seconds: float
    tokens_seen: int
    peak_memory_bytes: int
    best_validation_loss: float | None = None
    eval_seconds: float = 0.0  # part of train_seconds spent on held-out measurements
    stopped_early: bool = False
    resumed_from_step: int = 0
    data_sha256: str | None = None  # of the exact rows trained and validated on
    environment: dict = field(default_factory=dict)  # package versions, device, precision
    label_names: list | None = None  # classification: label id -> name
    validation_accuracy: float | None = None  # classification only
    extra_metrics: dict = field(default_factory=dict)  # a task kind's own held-out metrics (reward accuracy, margin)


class TrainingCallbacks(Protocol):
    """How the pipeline talks back to its caller (progress rows, heartbeat, cancel flag)."""

    def on_progress(self, progress: Progress) -> None:
        """Called after every optimizer step."""
        ...

    def should_stop(self) -> bool:
        """Checked before every micro-step; True stops the run as "cancelled", unsaved."""
        ...

    # Optional: `on_checkpoint()` is called, when the callbacks have it, after each checkpoint is
    # written (the worker mirrors it into a bucket so that another machine can resume).
