"""The preference losses: how a model learns from what people prefer (pairs of answers, or answers
marked good or bad). One entry per loss, read by the catalogue's `preference_loss` parameter, the
job checks and the worker (worker/training/preference_losses.py holds the arithmetic, tested
against TRL's reference implementations). No torch here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PAIRS = "preference"  # the task kind of (prompt, chosen, rejected) rows
FEEDBACK = "feedback"  # the task kind of (prompt, answer, good/bad) rows


@dataclass(frozen=True)
class PreferenceLoss:
    key: str
    name: str
    summary: str
    task: str  # the task kind whose rows it learns from
    uses_reference: bool  # compares with the reference model (the starting point, adapter off)
    reference_impl: str  # the TRL function it equals (the tests compare on the same log-probs)


PREFERENCE_LOSSES: dict[str, PreferenceLoss] = {
    loss.key: loss
    for loss in (
        PreferenceLoss(
            "dpo",
            "DPO",
            "Direct preference optimisation: raise the chosen answer's likelihood over the rejected one, relative to the starting model.",
            PAIRS,
            True,
            "trl DPOTrainer (loss_type='sigmoid')",
        ),
        PreferenceLoss(
            "orpo",
            "ORPO",
            "Odds-ratio preference optimisation: learns the chosen answers and the preference in one loss, without a reference model.",
            PAIRS,
            False,
            "trl ORPOTrainer.odds_ratio_loss",
        ),
        PreferenceLoss(
            "simpo",
            "SimPO",
            "Simple preference optimisation: compares length-normalised likelihoods with a margin, without a reference model.",
            PAIRS,
            False,
            "trl CPOTrainer.cpo_loss (loss_type='simpo')",
        ),
        PreferenceLoss(
            "kto",
            "KTO",
            "Learns from single answers marked good or bad (no pairs needed), relative to the starting model.",
            FEEDBACK,
            True,
            "trl KTOTrainer.kto_loss",
        ),
    )
}
AUTO = "auto"
LOSS_CHOICES: tuple[str, ...] = (AUTO, *PREFERENCE_LOSSES)
PREFERENCE_TASKS: tuple[str, ...] = (PAIRS, FEEDBACK)


def losses_for(task: str) -> list[PreferenceLoss]:
    return [loss for loss in PREFERENCE_LOSSES.values() if loss.task == task]


def resolve_loss(task: str, choice: Any) -> PreferenceLoss:
    """The loss a job trains with: its `preference_loss` parameter ('auto' = the task's first);
    ValueError with a plain message when the loss cannot learn from this task's rows."""
    choice = str(choice or AUTO)
    if choice == AUTO:
        return losses_for(task)[0]
    loss = PREFERENCE_LOSSES.get(choice)
    if loss is None:
        raise ValueError(f"Unknown preference loss {choice!r}. Choose one of: {', '.join(LOSS_CHOICES)}.")
    if loss.task != task:
        if task == FEEDBACK:
            raise ValueError(f"{loss.name} learns from pairs of answers; good/bad feedback rows train with KTO.")
        raise ValueError(f"{loss.name} learns from answers marked good or bad; pairs of answers train with DPO, ORPO or SimPO.")
    return loss
