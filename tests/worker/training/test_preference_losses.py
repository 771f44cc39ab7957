"""Each preference loss equals TRL's reference implementation on the same log-probabilities (to
1e-5): TRL's own functions run next to ours. ORPO's odds_ratio_loss and CPO's cpo_loss are
methods reading a few attributes; DPO's and KTO's losses live inside their trainers'
_compute_loss, which is run here with a model stand-in that returns the given per-token
log-probabilities (what TRL's fused LM head returns)."""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from worker.training.preference_losses import (
    PreferenceBatch,
    SequenceLogps,
    answer_logps,
    dpo_loss,
    kto_loss,
    orpo_loss,
    simpo_loss,
)

trl = pytest.importorskip("trl")
from trl.experimental.cpo.cpo_trainer import CPOTrainer  # noqa: E402
from trl.experimental.orpo.orpo_trainer import ORPOTrainer  # noqa: E402
from trl.trainer.dpo_trainer import DPOTrainer  # noqa: E402
from trl.trainer.kto_trainer import KTOTrainer  # noqa: E402

TOL = 1e-5


def _accelerator():
    return SimpleNamespace(device=torch.device("cpu"), gather_for_metrics=lambda x: x, gather=lambda x: x)


class _LogpModel(torch.nn.Module):
    """Returns fixed per-token log-probabilities (and the other fields TRL's metrics read)."""

    def __init__(self, per_token: torch.Tensor):
        super().__init__()
        self.per_token = per_token

    def forward(self, **kwargs):
        n = self.per_token.shape
        return SimpleNamespace(
            log_probs=self.per_token,
            entropy=torch.zeros(n),
            mean_logits=torch.zeros(n),
            is_top1=torch.zeros(n, dtype=torch.bool),
        )


def _per_token(batch: int, width: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random per-token log-probs [batch, width-1] and a completion mask [batch, width] (prompt first)."""
    g = torch.Generator().manual_seed(seed)
    logps = -torch.rand(batch, width - 1, generator=g) * 3
    mask = torch.zeros(batch, width, dtype=torch.long)
    for row in range(batch):
        start = int(torch.randint(2, width // 2, (1,), generator=g))
        end = int(torch.randint(start + 1, width + 1, (1,), generator=g))
        mask[row, start:end] = 1
    return logps * mask[:, 1:], mask


def test_answer_logps_equal_trl_batch_logps():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 12, 50, generator=g)
    labels = torch.randint(0, 50, (4, 12), generator=g)
    labels[:, :5] = -100
    labels[1, 9:] = -100
    ours = answer_logps(logits, labels)
    assert torch.allclose(ours.total, ORPOTrainer.get_batch_logps(logits, labels, average_log_prob=False), atol=TOL)
    assert torch.allclose(ours.mean, ORPOTrainer.get_batch_logps(logits, labels, average_log_prob=True), atol=TOL)


@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_dpo_equals_trl(beta):
    per_token, mask = _per_token(8, 16, seed=1)  # rows 0-3 chosen, 4-7 rejected, as TRL concatenates
    ref = -torch.rand(8) * 20
    fake = SimpleNamespace(
        model=SimpleNamespace(training=True),
        accelerator=_accelerator(),
        aux_loss_enabled=False,
        ld_alpha=None,
        precompute_ref_logps=True,
        f_divergence_type="reverse_kl",
        loss_types=["sigmoid"],
        loss_weights=[1.0],
        beta=beta,
        use_weighting=False,
        _metrics=defaultdict(lambda: defaultdict(list)),
        _total_train_tokens=0,
        _tp_size=1,
    )
    inputs = {
        "input_ids": torch.zeros_like(mask),
        "attention_mask": torch.ones_like(mask),
        "completion_mask": mask,
        "ref_chosen_logps": ref[:4],
        "ref_rejected_logps": ref[4:],
    }
    expected = DPOTrainer._compute_loss(fake, _LogpModel(per_token), inputs, return_outputs=False)
    totals = per_token.sum(1)
    ours = dpo_loss(
        PreferenceBatch(
            beta=beta,
            chosen=SequenceLogps(totals[:4], mask[:4, 1:].sum(1)),
            rejected=SequenceLogps(totals[4:], mask[4:, 1:].sum(1)),
            ref_chosen=ref[:4],
            ref_rejected=ref[4:],
        )
    )
    assert abs(float(ours) - float(expected)) < TOL


def test_orpo_equals_trl():
    g = torch.Generator().manual_seed(2)
    chosen = SequenceLogps(-torch.rand(6, generator=g) * 30 - 0.1, torch.randint(3, 20, (6,), generator=g))
    rejected = SequenceLogps(-torch.rand(6, generator=g) * 30 - 0.1, torch.randint(3, 20, (6,), generator=g))
    beta = 0.2
    fake = SimpleNamespace(beta=beta, accelerator=_accelerator())
    losses, *_ = ORPOTrainer.odds_ratio_loss(fake, chosen.mean, rejected.mean)
    nll = -chosen.total.sum() / chosen.tokens.sum()  # TRL's policy_nll_loss: cross-entropy over the chosen tokens
    expected = nll - losses.mean()
    ours = orpo_loss(PreferenceBatch(beta=beta, chosen=chosen, rejected=rejected))
    assert abs(float(ours) - float(expected)) < TOL


@pytest.mark.parametrize("beta,gamma", [(2.0, 0.5), (0.1, 1.0)])
def test_simpo_equals_trl_cpo_simpo(beta, gamma):
    g = torch.Generator().manual_seed(3)
    chosen = SequenceLogps(-torch.rand(6, generator=g) * 30, torch.randint(3, 20, (6,), generator=g))
    rejected = SequenceLogps(-torch.rand(6, generator=g) * 30, torch.randint(3, 20, (6,), generator=g))
    fake = SimpleNamespace(beta=beta, alpha=0.0, loss_type="simpo", simpo_gamma=gamma, label_smoothing=0.0, accelerator=_accelerator())
    losses, *_ = CPOTrainer.cpo_loss(fake, chosen.mean, rejected.mean)
    expected = losses.mean()  # cpo_alpha = 0: SimPO has no NLL term
    ours = simpo_loss(PreferenceBatch(beta=beta, chosen=chosen, rejected=rejected, simpo_gamma=gamma))
    assert abs(float(ours) - float(expected)) < TOL


def test_kto_equals_trl():
    per_token, mask = _per_token(8, 16, seed=4)
    kl_per_token, kl_mask = _per_token(8, 16, seed=5)
    ref = -torch.rand(8) * 20
    ref_kl = kl_per_token.sum(1) - torch.rand(8)  # policy above the reference: a positive KL estimate
    labels = torch.tensor([True, False, True, True, False, False, True, False])
    beta = 0.1

    class Model(_LogpModel):
        def forward(self, **kwargs):
            out = super().forward(**kwargs)
            if kwargs["input_ids"] is inputs["KL_input_ids"]:
                out.log_probs = kl_per_token
            return out

    fake = SimpleNamespace(
        model=SimpleNamespace(training=True),
        accelerator=_accelerator(),
        aux_loss_enabled=False,
        precompute_ref_logps=True,
        calculate_KL=True,
        loss_type="kto",
        beta=beta,
        desirable_weight=1.0,
        undesirable_weight=1.0,
        _metrics=defaultdict(lambda: defaultdict(list)),
        _total_train_tokens=0,
        _tp_size=1,
    )
    fake._compute_kl_logps = lambda model, batch: KTOTrainer._compute_kl_logps(fake, model, batch)
    inputs = {
        "input_ids": torch.zeros_like(mask),
        "attention_mask": torch.ones_like(mask),
        "completion_mask": mask,
        "KL_input_ids": torch.ones_like(kl_mask),
        "KL_attention_mask": torch.ones_like(kl_mask),
        "KL_completion_mask": kl_mask,
        "label": labels,
        "ref_logps": ref,
        "ref_KL_logps": ref_kl,
    }
    expected = KTOTrainer._compute_loss(fake, Model(per_token), inputs, return_outputs=False)
    kl = (kl_per_token.sum(1) - ref_kl).mean().clamp(min=0)
    ours = kto_loss(
        PreferenceBatch(beta=beta, answers=SequenceLogps(per_token.sum(1), mask[:, 1:].sum(1)), ref_answers=ref, good=labels, kl=kl)
    )
    assert abs(float(ours) - float(expected)) < TOL
