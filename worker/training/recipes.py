"""Which recipe trains a task kind: the plain TrainingRecipe (worker/training/loop.py), or a task
kind's own subclass that fills its hooks (preference tuning). Keyed by TASK_KINDS' keys."""

from __future__ import annotations

from worker.training.loop import TrainingRecipe, TrainingRun
from worker.training.preference import PreferenceRecipe
from worker.training.spec import TrainingCallbacks, TrainingResult, TrainingSpec

RECIPES: dict[str, type[TrainingRecipe]] = {"preference": PreferenceRecipe, "feedback": PreferenceRecipe}


def recipe_for(spec: TrainingSpec, callbacks: TrainingCallbacks) -> TrainingRecipe:
    return RECIPES.get(spec.task, TrainingRecipe)(spec, callbacks)


def run_training(spec: TrainingSpec, callbacks: TrainingCallbacks) -> TrainingRun:
    """Train and save the adapter with the task kind's recipe; also return the in-memory model."""
    return recipe_for(spec, callbacks).run()


def train(spec: TrainingSpec, callbacks: TrainingCallbacks) -> TrainingResult:
    return run_training(spec, callbacks).result
