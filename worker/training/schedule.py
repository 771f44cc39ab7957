"""When things happen in a run: seeding, steps per epoch, the learning-rate curve and the
order in which each epoch visits the examples."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from transformers import set_seed

from worker.training.data import TokenizedExample, length_grouped_batches


@dataclass(frozen=True)
class StepPlan:
    """How many optimizer steps the run makes, and how many of them warm up."""

    micro_batches_per_epoch: int
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int


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


def epoch_step_groups(examples: Sequence[TokenizedExample], params: dict[str, Any], seed: int, epoch: int) -> list[list[list[int]]]:
    """One epoch as optimizer steps, each a list of micro-batches of example indices."""
    lengths = [len(example) for example in examples]
    epoch_seed = seed * 100_003 + epoch  # a different, reproducible order every epoch
    batches = length_grouped_batches(lengths, int(params["batch_size"]), seed=epoch_seed)
    accumulation = max(1, int(params["gradient_accumulation_steps"]))
    return [batches[i : i + accumulation] for i in range(0, len(batches), accumulation)]
