"""How far a run has come (the loop state a checkpoint carries) and how that is reported."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from worker.training.memory import peak_memory_bytes
from worker.training.schedule import StepPlan
from worker.training.spec import Progress, TrainingCallbacks


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


def report_progress(
    callbacks: TrainingCallbacks,
    state: LoopState,
    plan: StepPlan,
    loss: float,
    learning_rate: float,
    started: float,
    *,
    grad_norm: float | None = None,
    validation_loss: float | None = None,
    device=None,
    elapsed_before: float = 0.0,
    tokens_before: int = 0,
    eval_before: float = 0.0,
) -> None:
    """One Progress to the callbacks after an optimizer step; `started` is this session's start."""
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


def recent_train_loss(state: LoopState, plan: StepPlan) -> float | None:
    """Mean step loss over the last epoch's worth of steps (the last pass over the data)."""
    if not state.step_losses:
        return None
    recent = state.step_losses[-plan.steps_per_epoch :]
    return sum(recent) / len(recent)
