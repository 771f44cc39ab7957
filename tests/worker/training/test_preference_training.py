"""Preference tuning on the tiny Llama: DPO on pairs and KTO on good/bad rows raise the held-out
reward accuracy and margin (and the model's own preference for the chosen answers); the saved
adapters load with plain PEFT; a run continuing from a parent adapter starts from its weights."""

from __future__ import annotations

import pytest
import torch

from tests.worker.training.preference_data import feedback_rows, preference_rows
from worker.training.recipes import recipe_for, train
from worker.training.spec import Progress, TrainingSpec


class Recorder:
    def __init__(self):
        self.progress: list[Progress] = []

    def on_progress(self, progress: Progress) -> None:
        self.progress.append(progress)

    def should_stop(self) -> bool:
        return False


def _spec(model_dir, out, task, rows, **params) -> TrainingSpec:
    base = {"max_steps": 6, "batch_size": 4, "learning_rate": 3e-3, "checkpoint_minutes": 0, "max_length": 48, "epochs": 5}
    technique, parent = params.pop("technique", "lora"), params.pop("parent", None)
    return TrainingSpec(
        base_model_dir=str(model_dir),
        technique=technique,
        params={**base, **params},
        train_rows=rows[:24],
        validation_rows=rows[24:],
        output_dir=str(out),
        task=task,
        parent_adapter_dir=parent,
    )


def _load_with_peft(model_dir, adapter_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(model_dir))
    return PeftModel.from_pretrained(base, str(adapter_dir))


def test_dpo_raises_held_out_reward_accuracy_and_margin(tiny_model_dir, tmp_path):
    rows = preference_rows(34, seed=1)
    recorder = Recorder()
    result = train(_spec(tiny_model_dir, tmp_path / "dpo", "preference", rows), recorder)
    m = result.extra_metrics
    assert result.status == "completed" and m["preference_loss"] == "dpo"
    # Before training every reward is 0 (the policy is the reference): accuracy 0, margin 0.
    assert m["reward_accuracy"] >= 0.9 and m["reward_accuracy_low"] <= m["reward_accuracy"] <= m["reward_accuracy_high"]
    assert m["reward_margin"] > 0 and m["reward_margin_low"] > 0
    assert m["reward_accuracy_low"] > 0.5  # beyond chance
    # chosen and rejected log-probabilities reported with every step, drifting apart
    first, last = recorder.progress[0].extras, recorder.progress[-1].extras
    assert (last["chosen_logps"] - last["rejected_logps"]) > (first["chosen_logps"] - first["rejected_logps"])
    model = _load_with_peft(tiny_model_dir, tmp_path / "dpo")
    assert any("lora_A" in name for name, _ in model.named_parameters())


def test_kto_on_good_bad_rows_raises_reward_accuracy_and_margin(tiny_model_dir, tmp_path):
    rows = feedback_rows(34, seed=2)
    result = train(_spec(tiny_model_dir, tmp_path / "kto", "feedback", rows), Recorder())
    m = result.extra_metrics
    assert result.status == "completed" and m["preference_loss"] == "kto"
    assert m["reward_accuracy"] >= 0.75 and m["reward_margin"] > 0 and m["reward_margin_low"] > 0
    _load_with_peft(tiny_model_dir, tmp_path / "kto")


def test_continuing_from_a_parent_starts_from_its_weights_and_uses_it_as_reference(tiny_model_dir, tmp_path):
    rows = preference_rows(30, seed=3)
    train(_spec(tiny_model_dir, tmp_path / "parent", "preference", rows, max_steps=2), Recorder())
    recipe = recipe_for(_spec(tiny_model_dir, tmp_path / "child", "preference", rows, parent=str(tmp_path / "parent")), Recorder())
    recipe.setup()
    parent = _load_with_peft(tiny_model_dir, tmp_path / "parent")
    child_weights = {n.replace(".default", ""): p for n, p in recipe.model.named_parameters() if "lora_" in n}
    for name, value in parent.named_parameters():
        if "lora_" in name:
            assert torch.allclose(child_weights[name.replace(".default", "")], value)
    # the reference is the parent: before any step, every reward (policy − reference) is zero
    held = recipe.held_out()
    assert max(abs(r) for r in held.chosen_rewards + held.rejected_rewards) < 1e-4
    recipe.close()


@pytest.mark.parametrize("loss", ["orpo", "simpo"])
def test_reference_free_losses_train(tiny_model_dir, tmp_path, loss):
    rows = preference_rows(30, seed=4)
    result = train(_spec(tiny_model_dir, tmp_path / loss, "preference", rows, max_steps=3, preference_loss=loss), Recorder())
    assert result.status == "completed" and result.extra_metrics["preference_loss"] == loss


def test_feedback_all_good_is_refused_with_a_plain_reason(tiny_model_dir, tmp_path):
    rows = [(p, a, "good") for p, a, _ in feedback_rows(20)]
    with pytest.raises(ValueError, match="good"):
        train(_spec(tiny_model_dir, tmp_path / "x", "feedback", rows), Recorder())


class _DiesAfter(Recorder):
    def __init__(self, steps: int):
        super().__init__()
        self.steps = steps

    def on_progress(self, progress: Progress) -> None:
        super().on_progress(progress)
        if progress.step == self.steps:
            raise KeyboardInterrupt  # a killed worker


def test_a_resumed_dpo_run_gives_the_uninterrupted_adapter(tiny_model_dir, tmp_path):
    """The reference is computed from the starting point before the checkpoint is loaded, so a run
    resumed after a crash ends where the uninterrupted one does."""
    from safetensors.torch import load_file

    rows = preference_rows(30, seed=5)

    def spec(name, **extra):
        s = _spec(tiny_model_dir, tmp_path / name / "adapter", "preference", rows, max_steps=5, dropout=0.0, **extra)
        return TrainingSpec(**{**s.__dict__, "checkpoint_dir": str(tmp_path / name / "checkpoint")})

    straight = Recorder()
    train(spec("straight", checkpoint_minutes=0), straight)
    with pytest.raises(KeyboardInterrupt):
        train(spec("resumed", checkpoint_minutes=1e-9), _DiesAfter(3))
    resumed = Recorder()
    result = train(spec("resumed", checkpoint_minutes=1e-9), resumed)
    assert result.status == "completed" and result.resumed_from_step == 2
    assert [p.loss for p in resumed.progress] == pytest.approx([p.loss for p in straight.progress][2:], rel=1e-4)
    a = load_file(str(tmp_path / "straight" / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "adapter" / "adapter_model.safetensors"))
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-6)


def test_cancel_stops_a_preference_run_unsaved(tiny_model_dir, tmp_path):
    class StopsAtOnce(Recorder):
        def should_stop(self) -> bool:
            return bool(self.progress)

    rows = preference_rows(30, seed=6)
    result = train(_spec(tiny_model_dir, tmp_path / "cancel", "preference", rows, max_steps=5), StopsAtOnce())
    assert result.status == "cancelled" and result.steps == 1
    assert not (tmp_path / "cancel" / "adapter_model.safetensors").exists()
