"""The arithmetic of the preference losses (app/domain/preference_losses.py names them), on
per-sequence log-probabilities. Each equals TRL's reference implementation on the same numbers
(tests/worker/training/test_preference_losses.py runs TRL's own code next to these):

- DPO: DPOTrainer._compute_loss with loss_type "sigmoid" (summed log-probs of the answers);
- ORPO: ORPOTrainer.odds_ratio_loss plus the chosen answers' token-mean NLL (average log-probs);
- SimPO: CPOTrainer.cpo_loss with loss_type "simpo" (average log-probs, no NLL term: cpo_alpha 0);
- KTO: KTOTrainer._compute_loss with loss_type "kto" (summed log-probs, the KL term from
  mismatched prompt/answer pairs, desirable and undesirable weights 1).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class SequenceLogps:
    """Log-probabilities of a batch of answers: summed over each answer's tokens and their count."""

    total: torch.Tensor  # [batch]
    tokens: torch.Tensor  # [batch]

    @property
    def mean(self) -> torch.Tensor:
        return self.total / self.tokens.clamp(min=1)


@dataclass
class PreferenceBatch:
    """What a loss reads. Pairs: chosen/rejected (policy and reference). Feedback: answers, good."""

    beta: float
    chosen: SequenceLogps | None = None
    rejected: SequenceLogps | None = None
    ref_chosen: torch.Tensor | None = None  # summed log-probs under the reference
    ref_rejected: torch.Tensor | None = None
    answers: SequenceLogps | None = None
    ref_answers: torch.Tensor | None = None
    good: torch.Tensor | None = None  # bool [batch]
    kl: torch.Tensor | None = None  # KTO's KL estimate (a scalar, no gradient)
    simpo_gamma: float = 0.5


def dpo_loss(b: PreferenceBatch) -> torch.Tensor:
    assert b.chosen is not None and b.rejected is not None and b.ref_chosen is not None and b.ref_rejected is not None
    delta = (b.chosen.total - b.ref_chosen) - (b.rejected.total - b.ref_rejected)
    return (-F.logsigmoid(b.beta * delta)).mean()


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0, stable (as TRL's log1mexp)."""
    return torch.where(x > -0.6931471805599453, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def orpo_loss(b: PreferenceBatch) -> torch.Tensor:
    assert b.chosen is not None and b.rejected is not None
    chosen, rejected = b.chosen.mean.float(), b.rejected.mean.float()
    log_odds = (chosen - rejected) - (_log1mexp(chosen) - _log1mexp(rejected))
    nll = -b.chosen.total.sum() / b.chosen.tokens.sum().clamp(min=1)  # token-mean NLL of the chosen answers
    return nll - (b.beta * F.logsigmoid(log_odds)).mean()


def simpo_loss(b: PreferenceBatch) -> torch.Tensor:
    assert b.chosen is not None and b.rejected is not None
    logits = (b.chosen.mean - b.rejected.mean) - b.simpo_gamma / b.beta
    return (-F.logsigmoid(b.beta * logits)).mean()


def kto_loss(b: PreferenceBatch) -> torch.Tensor:
    assert b.answers is not None and b.ref_answers is not None and b.good is not None
    kl = b.kl if b.kl is not None else torch.zeros((), device=b.answers.total.device)
    logratios = b.answers.total - b.ref_answers
    chosen_losses = 1 - torch.sigmoid(b.beta * (logratios[b.good] - kl))
    rejected_losses = 1 - torch.sigmoid(b.beta * (kl - logratios[~b.good]))
    return torch.cat((chosen_losses, rejected_losses)).nanmean()


# By the key of app/domain/preference_losses.py's PREFERENCE_LOSSES.
LOSS_FUNCTIONS: dict[str, Callable[[PreferenceBatch], torch.Tensor]] = {
    "dpo": dpo_loss,
    "orpo": orpo_loss,
    "simpo": simpo_loss,
    "kto": kto_loss,
}


def answer_logps(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100) -> SequenceLogps:
    """Summed log-probabilities of the label tokens (labels shifted by one, -100 ignored)."""
    logits = logits[:, -labels.size(1) :, :][:, :-1, :].float()
    targets = labels[:, 1:]
    mask = targets != ignore_index
    gathered = torch.gather(logits.log_softmax(-1), 2, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return SequenceLogps(total=(gathered * mask).sum(-1), tokens=mask.sum(-1))
