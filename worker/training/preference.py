"""Preference tuning as a TrainingRecipe: pairs of answers (DPO, ORPO, SimPO) or answers marked
good or bad (KTO), on the LoRA family.

The reference model is the starting point: the base model with the new adapter switched off
(PEFT's disable_adapter), or the parent adapter when the job continues from one (the new adapter
starts as the parent's weights, so the model before its first step *is* the parent). Its
log-probabilities are computed once, before the first step (and before a resumed run loads its
checkpoint), for every training and held-out example: no second copy of the model is kept.

Everything else (schedule, checkpoints, resume, cancel, progress, saving) is the recipe of
worker/training/loop.py; this module fills its hooks: _tokenize, _accumulate, _validation_loss,
save and result. The losses' arithmetic is worker/training/preference_losses.py.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from app.domain.preference_losses import resolve_loss
from app.domain.stats import Estimate, bootstrap_mean
from worker.training.data import (
    TokenizedExample,
    _assemble,
    _prompt_adds_special_tokens,
    collate,
    eos_token_id,
    pad_token_id,
    render_prompt,
)
from worker.training.loop import TrainingRecipe
from worker.training.preference_losses import LOSS_FUNCTIONS, PreferenceBatch, SequenceLogps, answer_logps
from worker.training.spec import Progress, TrainingCallbacks, TrainingSpec
from worker.training.steps import to_device


@dataclass
class PairExample:
    """A prompt with its chosen and rejected answer (tokenized the instruction way), and the
    reference's summed log-probabilities of each."""

    chosen: TokenizedExample
    rejected: TokenizedExample
    ref_chosen: float = 0.0
    ref_rejected: float = 0.0
    label = None  # not a classification example (held_out.evaluate_accuracy skips these)

    def __len__(self) -> int:
        return max(len(self.chosen), len(self.rejected))

    def sequences(self) -> list[TokenizedExample]:
        return [self.chosen, self.rejected]


@dataclass
class FeedbackExample:
    """A prompt with one answer marked good or bad, plus KTO's mismatched pair (this prompt with
    the next row's answer) for the KL estimate."""

    answer: TokenizedExample
    good: bool
    mismatched: TokenizedExample
    ref_answer: float = 0.0
    ref_mismatched: float = 0.0
    label = None

    def __len__(self) -> int:
        return max(len(self.answer), len(self.mismatched))

    def sequences(self) -> list[TokenizedExample]:
        return [self.answer, self.mismatched]


def _encode(tokenizer, rows: Sequence[tuple], answer_columns: Sequence[int], max_length: int) -> list[list[TokenizedExample | None]]:
    """Each row's prompt joined with each of its answers, exactly as instruction rows are."""
    prompts = [render_prompt(tokenizer, row[0], row[-1] if len(row) > 3 else None) for row in rows]
    prompt_ids = tokenizer(prompts, add_special_tokens=_prompt_adds_special_tokens(tokenizer))["input_ids"]
    eos = eos_token_id(tokenizer)
    answers = {c: tokenizer([str(row[c]) for row in rows], add_special_tokens=False)["input_ids"] for c in answer_columns}
    return [[_assemble(list(p), list(answers[c][i]), eos, max_length) for c in answer_columns] for i, p in enumerate(prompt_ids)]


def tokenize_pairs(tokenizer, rows: Sequence[tuple], max_length: int) -> list[PairExample]:
    """(prompt, chosen, rejected[, system]) rows; a row whose prompt leaves no room is dropped."""
    if not rows:
        return []
    return [PairExample(c, r) for c, r in _encode(tokenizer, rows, (1, 2), max_length) if c is not None and r is not None]


def tokenize_feedback(tokenizer, rows: Sequence[tuple], max_length: int) -> list[FeedbackExample]:
    """(prompt, answer, 'good'|'bad'[, system]) rows; the mismatched pair takes the next row's answer."""
    if not rows:
        return []
    shifted = [(row[0], rows[(i + 1) % len(rows)][1], row[2], *row[3:]) for i, row in enumerate(rows)]
    own = _encode(tokenizer, rows, (1,), max_length)
    other = _encode(tokenizer, shifted, (1,), max_length)
    return [FeedbackExample(a[0], row[2] == "good", m[0]) for row, a, m in zip(rows, own, other) if a[0] is not None and m[0] is not None]


class _WithExtras:
    """The caller's callbacks, with the last step's chosen/rejected log-probabilities attached to
    every Progress (metric points on the job page)."""

    def __init__(self, callbacks: TrainingCallbacks):
        self.inner = callbacks
        self.extras: dict[str, float] = {}

    def on_progress(self, progress: Progress) -> None:
        progress.extras = dict(self.extras)
        self.inner.on_progress(progress)

    def should_stop(self) -> bool:
        return self.inner.should_stop()

    def on_checkpoint(self) -> None:
        if hasattr(self.inner, "on_checkpoint"):
            self.inner.on_checkpoint()


@dataclass
class HeldOut:
    """Per held-out example: the reward of each answer, β·(log π − log π_ref)."""

    chosen_rewards: list[float] = field(default_factory=list)
    rejected_rewards: list[float] = field(default_factory=list)
    chosen_logps: list[float] = field(default_factory=list)
    rejected_logps: list[float] = field(default_factory=list)
    loss: float | None = None


class PreferenceRecipe(TrainingRecipe):
    """The training recipe for the preference and feedback task kinds."""

    def __init__(self, spec: TrainingSpec, callbacks: TrainingCallbacks):
        self.progress_extras = _WithExtras(callbacks)
        super().__init__(spec, self.progress_extras)
        self.loss = resolve_loss(spec.task, self.params.get("preference_loss"))
        self.loss_fn = LOSS_FUNCTIONS[self.loss.key]
        self.beta = float(self.params.get("preference_beta", 0.1))
        self.pairs = spec.task != "feedback"
        self.extra_metrics: dict[str, Any] = {}
        # The examples as this recipe knows them (pairs or rated answers); the loop sees the same lists.
        self.pref_train: list[Any] = []
        self.pref_validation: list[Any] = []
        self.last_held_out: tuple[int, HeldOut] | None = None  # (step, result) of the latest held-out check

    # --- setup ----------------------------------------------------------------------------------

    def packing_applies(self) -> bool:
        return False  # two answers per example; packing would mix them

    def _tokenize(self) -> None:
        spec, max_length = self.spec, int(self.params["max_length"])
        tokenize = tokenize_pairs if self.pairs else tokenize_feedback
        self.pref_train = list(tokenize(self.tokenizer, spec.train_rows, max_length))
        self.pref_validation = list(tokenize(self.tokenizer, spec.validation_rows, max_length))
        self.train_examples, self.validation_examples = self.pref_train, self.pref_validation
        if not self.pref_train:
            raise ValueError(f"No training row fits in max_length={max_length} tokens; raise max_length or shorten the prompts.")
        if not self.pairs and len({e.good for e in self.pref_train}) < 2:
            raise ValueError('KTO needs training rows marked "good" and rows marked "bad"; these rows are all one kind.')
        self.pad_id = pad_token_id(self.tokenizer)

    def setup(self) -> None:
        super().setup()
        self._compute_reference()

    def _fits_without_recompute(self) -> bool:
        """Two sequences per example (and the reference pass): not what the estimate sizes, so
        "auto" on a GPU keeps recomputing activations here."""
        return False

    def _reference_context(self):
        """The reference: the parent adapter as loaded (nothing to switch), or the base model."""
        if self.spec.parent_adapter_dir or not hasattr(self.model, "disable_adapter"):
            return contextlib.nullcontext()
        return self.model.disable_adapter()

    @torch.no_grad()
    def _compute_reference(self) -> None:
        """Reference log-probabilities of every answer, once, before the first step."""
        was_training = self.model.training
        self.model.eval()
        examples = self.pref_train + self.pref_validation
        batch_size = int(self.params["batch_size"])
        with self._reference_context():
            for start in range(0, len(examples), batch_size):
                chunk = examples[start : start + batch_size]
                first, second = self._logps(chunk)
                for example, a, b in zip(chunk, first.total.tolist(), second.total.tolist()):
                    if isinstance(example, PairExample):
                        example.ref_chosen, example.ref_rejected = a, b
                    else:
                        example.ref_answer, example.ref_mismatched = a, b
        if was_training:
            self.model.train()

    # --- the step -------------------------------------------------------------------------------

    def _logps(self, examples: Sequence[PairExample | FeedbackExample]) -> tuple[SequenceLogps, SequenceLogps]:
        """One forward over both sequences of each example (first ones, then second ones)."""
        sequences = [e.sequences()[0] for e in examples] + [e.sequences()[1] for e in examples]
        batch = to_device(collate(sequences, self.pad_id), self.device)
        with self.precision.autocast(self.device):
            logits = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
        logps = answer_logps(logits, batch["labels"])
        n = len(examples)
        return SequenceLogps(logps.total[:n], logps.tokens[:n]), SequenceLogps(logps.total[n:], logps.tokens[n:])

    def _batch(self, examples: Sequence[Any]) -> PreferenceBatch:
        device = self.device
        gamma = float(self.params.get("simpo_gamma", 0.5))
        if self.pairs:
            chosen, rejected = self._logps(examples)
            return PreferenceBatch(
                beta=self.beta,
                chosen=chosen,
                rejected=rejected,
                ref_chosen=torch.tensor([e.ref_chosen for e in examples], device=device),
                ref_rejected=torch.tensor([e.ref_rejected for e in examples], device=device),
                simpo_gamma=gamma,
            )
        answers, mismatched = self._logps(examples)
        ref_mismatched = torch.tensor([e.ref_mismatched for e in examples], device=device)
        kl = (mismatched.total.detach() - ref_mismatched).mean().clamp(min=0)  # as TRL: no gradient through KL
        return PreferenceBatch(
            beta=self.beta,
            answers=answers,
            ref_answers=torch.tensor([e.ref_answer for e in examples], device=device),
            good=torch.tensor([e.good for e in examples], dtype=torch.bool, device=device),
            kl=kl,
        )

    def _accumulate(self, group: list[list[int]]) -> float | None:
        """Forward/backward the step's micro-batches (each weighted by its share of the examples)."""
        n_examples = sum(len(indices) for indices in group)
        total = 0.0
        chosen_sum, rejected_sum, chosen_n, rejected_n = 0.0, 0.0, 0, 0
        for indices in group:
            if self.callbacks.should_stop():
                return None
            examples = [self.pref_train[i] for i in indices]
            batch = self._batch(examples)
            loss = self.loss_fn(batch).float() * (len(indices) / n_examples)
            (self.precision.scaler.scale(loss) if self.precision.scaler is not None else loss).backward()
            total += float(loss.detach())
            self.state.tokens_seen += sum(len(s) for e in examples for s in e.sequences())
            first, second = self._sides(batch)
            chosen_sum, chosen_n = chosen_sum + sum(first), chosen_n + len(first)
            rejected_sum, rejected_n = rejected_sum + sum(second), rejected_n + len(second)
        self.progress_extras.extras = {
            key: value
            for key, value in (("chosen_logps", chosen_sum / max(1, chosen_n)), ("rejected_logps", rejected_sum / max(1, rejected_n)))
            if (chosen_n if key == "chosen_logps" else rejected_n)
        }
        return total

    @staticmethod
    def _sides(batch: PreferenceBatch) -> tuple[list[float], list[float]]:
        """Summed log-probabilities of the chosen (good) and rejected (bad) answers of a batch."""
        if batch.chosen is not None and batch.rejected is not None:
            return batch.chosen.total.detach().tolist(), batch.rejected.total.detach().tolist()
        assert batch.answers is not None and batch.good is not None
        totals = batch.answers.total.detach()
        return totals[batch.good].tolist(), totals[~batch.good].tolist()

    # --- held-out -------------------------------------------------------------------------------

    @torch.no_grad()
    def held_out(self) -> HeldOut:
        """Rewards and log-probabilities of every held-out example, and the mean held-out loss."""
        result = HeldOut()
        if not self.pref_validation:
            return result
        was_training = self.model.training
        self.model.eval()
        rng_state = torch.random.get_rng_state()
        batch_size = int(self.params["batch_size"])
        losses: list[tuple[float, int]] = []
        for start in range(0, len(self.pref_validation), batch_size):
            examples = self.pref_validation[start : start + batch_size]
            batch = self._batch(examples)
            losses.append((float(self.loss_fn(batch)), len(examples)))
            if self.pairs:
                assert batch.chosen is not None and batch.rejected is not None
                result.chosen_logps += batch.chosen.total.tolist()
                result.rejected_logps += batch.rejected.total.tolist()
                result.chosen_rewards += [self.beta * (p - e.ref_chosen) for p, e in zip(batch.chosen.total.tolist(), examples)]
                result.rejected_rewards += [self.beta * (p - e.ref_rejected) for p, e in zip(batch.rejected.total.tolist(), examples)]
            else:
                assert batch.answers is not None
                for p, e in zip(batch.answers.total.tolist(), examples):
                    (result.chosen_logps if e.good else result.rejected_logps).append(p)
                    (result.chosen_rewards if e.good else result.rejected_rewards).append(self.beta * (p - e.ref_answer))
        torch.random.set_rng_state(rng_state)
        if was_training:
            self.model.train()
        result.loss = sum(loss * n for loss, n in losses) / max(1, sum(n for _, n in losses))
        return result

    def _validation_loss(self) -> float | None:
        held = self.held_out()
        self.last_held_out = (self.state.step, held)
        return held.loss

    def save(self) -> None:
        super().save()
        if self.status == "completed":
            last = self.last_held_out
            held = last[1] if last is not None and last[0] == self.state.step else self.held_out()  # measured at the last step already
            self.extra_metrics = preference_metrics(held, self.pref_validation, self.pairs, self.loss.key)

    def result(self):
        result = super().result()
        result.extra_metrics = dict(self.extra_metrics)
        return result


def preference_metrics(held: HeldOut, examples: Sequence[Any], pairs: bool, loss: str) -> dict[str, Any]:
    """Reward accuracy and margin on the held-out examples, with 95% bootstrap intervals.

    Pairs: accuracy = share of pairs whose chosen answer gets the higher reward (TRL's
    rewards/accuracies); margin = mean chosen − rejected reward. Feedback: accuracy = share of
    answers whose reward has the sign of their mark (good > 0, bad < 0); margin = mean reward of
    good answers − mean reward of bad ones. Before the first step every reward is 0 (the model is
    its reference), so accuracy and margin start at 0; an interval whose low end is above 0.5 says
    the preference was learnt beyond chance.
    """
    metrics: dict[str, Any] = {"preference_loss": loss, "held_out_examples": len(examples)}
    if not examples:
        return metrics
    if pairs:
        hits = [1.0 if c > r else 0.0 for c, r in zip(held.chosen_rewards, held.rejected_rewards)]
        margins = [c - r for c, r in zip(held.chosen_rewards, held.rejected_rewards)]
        margin = bootstrap_mean(margins)
    else:
        hits = [1.0 if r > 0 else 0.0 for r in held.chosen_rewards] + [1.0 if r < 0 else 0.0 for r in held.rejected_rewards]
        good, bad = held.chosen_rewards, held.rejected_rewards
        mean_good = sum(good) / len(good) if good else 0.0
        mean_bad = sum(bad) / len(bad) if bad else 0.0
        spread = bootstrap_mean(good).high - bootstrap_mean(good).value if good else 0.0
        spread_bad = bootstrap_mean(bad).high - bootstrap_mean(bad).value if bad else 0.0
        half = (spread**2 + spread_bad**2) ** 0.5  # the two means are independent samples
        margin_value = mean_good - mean_bad
        margin = Estimate(margin_value, margin_value - half, margin_value + half)
    accuracy = bootstrap_mean(hits)
    metrics.update(
        reward_accuracy=accuracy.value,
        reward_accuracy_low=accuracy.low,
        reward_accuracy_high=accuracy.high,
        reward_margin=margin.value,
        reward_margin_low=margin.low,
        reward_margin_high=margin.high,
        held_out_chosen_logps=sum(held.chosen_logps) / max(1, len(held.chosen_logps)),
        held_out_rejected_logps=sum(held.rejected_logps) / max(1, len(held.rejected_logps)),
    )
    return metrics
