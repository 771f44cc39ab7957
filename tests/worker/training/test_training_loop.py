"""The training loop on the tiny Llama: learning, saving, reloading, cancelling."""

import json

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from worker.training.data import collate, tokenize_rows
from worker.training.loop import run_training, train
from worker.training.schedule import lr_factor, plan_steps
from worker.training.spec import Progress, TrainingSpec, resolve_params

WORDS = "jacket shirt coat dress parcel refund invoice card sleeve collar button pocket fabric cotton wool linen"
DAYS = ["Monday", "Tuesday", "Friday", "Sunday"]
# 16 distinct short pairs: memorisable by a tiny model in a few dozen steps.
MEMO_ROWS = [(f"What is code {i}?", f"Code {i} means the {word} ships on {DAYS[i % 4]}.") for i, word in enumerate(WORDS.split())]


class Recorder:
    """Collects progress; asks to stop once `stop_after` steps were reported."""

    def __init__(self, stop_after: int | None = None):
        self.progress: list[Progress] = []
        self.stop_after = stop_after
        self.stop_checks = 0

    def on_progress(self, progress: Progress) -> None:
        self.progress.append(progress)

    def should_stop(self) -> bool:
        self.stop_checks += 1
        return self.stop_after is not None and len(self.progress) >= self.stop_after


def _spec(model_dir, output_dir, **params) -> TrainingSpec:
    defaults = {"learning_rate": 3e-3, "epochs": 100, "batch_size": 8, "max_steps": 30}
    return TrainingSpec(
        base_model_dir=str(model_dir),
        technique="lora",
        params={**defaults, **params},
        train_rows=MEMO_ROWS,
        validation_rows=MEMO_ROWS[:4],
        output_dir=str(output_dir),
        seed=0,
    )


@pytest.fixture(scope="module")
def trained(tiny_model_dir, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("run") / "adapter"
    recorder = Recorder()
    run = run_training(_spec(tiny_model_dir, output_dir), recorder)
    return run, recorder, output_dir


def _logits(model, tokenizer):
    examples = tokenize_rows(tokenizer, MEMO_ROWS[:4], max_length=64).examples
    batch = collate(examples, tokenizer.pad_token_id)
    model.eval()
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def test_loss_goes_down_on_a_memorisable_dataset(trained):
    run, recorder, _ = trained
    result = run.result
    assert result.status == "completed"
    assert result.steps == 30
    assert [p.step for p in recorder.progress] == list(range(1, 31))
    first = recorder.progress[0].loss
    assert recorder.progress[-1].loss < 0.5 * first
    assert result.train_loss < 0.5 * first
    assert result.validation_loss is not None and result.validation_loss < 0.5 * first


def test_progress_and_result_numbers_are_sane(trained):
    run, recorder, _ = trained
    result, last = run.result, recorder.progress[-1]
    assert last.total_steps == 30 and last.eta_seconds == 0
    assert last.epoch == pytest.approx(15.0)  # 16 rows / batch 8 = 2 steps per epoch
    assert all(p.tokens_per_second > 0 and p.elapsed_seconds > 0 for p in recorder.progress)
    # Warm-up (ceil(5% of 30) = 2 steps) rises to the peak, then the rate decays, never to zero.
    rates = [p.learning_rate for p in recorder.progress]
    assert rates[0] < rates[2] == pytest.approx(3e-3)
    assert rates[-1] > 0 and rates[-1] < rates[10]
    assert 0 < result.trainable_parameters < result.total_parameters
    assert result.tokens_seen > 0 and result.peak_memory_bytes > 0 and result.train_seconds > 0


def test_adapter_is_saved_as_safetensors_with_its_config(trained):
    _, _, output_dir = trained
    assert (output_dir / "adapter_model.safetensors").is_file()
    config = json.loads((output_dir / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 8
    leftovers = [p.name for p in output_dir.parent.iterdir() if "partial" in p.name]
    assert leftovers == []


# peft 0.21 calls a transformers 5 method that warns about its own deprecation.
@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing")
def test_plain_peft_reload_reproduces_the_trained_logits(trained, tiny_model_dir):
    run, _, output_dir = trained
    trained_logits = _logits(run.model, run.tokenizer)

    fresh_base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
    base_logits = _logits(fresh_base, run.tokenizer)
    reloaded = PeftModel.from_pretrained(fresh_base, str(output_dir))
    reloaded_logits = _logits(reloaded, run.tokenizer)

    torch.testing.assert_close(reloaded_logits, trained_logits, rtol=1e-4, atol=1e-4)
    assert (reloaded_logits - base_logits).abs().max() > 1.0


def test_cancel_stops_after_the_requested_steps_and_saves_nothing(tiny_model_dir, tmp_path):
    output_dir = tmp_path / "adapter"
    recorder = Recorder(stop_after=3)
    result = train(_spec(tiny_model_dir, output_dir), recorder)
    assert result.status == "cancelled"
    assert result.steps == 3
    assert len(recorder.progress) == 3
    assert result.validation_loss is None
    assert not output_dir.exists()
    assert list(tmp_path.iterdir()) == []


def test_same_seed_gives_the_same_losses(tiny_model_dir, tmp_path):
    runs = []
    for name in ("a", "b"):
        recorder = Recorder()
        train(_spec(tiny_model_dir, tmp_path / name, max_steps=3), recorder)
        runs.append([p.loss for p in recorder.progress])
    assert runs[0] == runs[1]


def test_chat_template_model_trains_with_accumulation(tiny_chat_model_dir, tmp_path):
    recorder = Recorder()
    spec = _spec(
        tiny_chat_model_dir,
        tmp_path / "adapter",
        batch_size=4,
        gradient_accumulation_steps=2,
        max_steps=3,
    )
    result = train(spec, recorder)
    assert result.status == "completed" and result.steps == 3
    assert recorder.stop_checks == 6  # checked before every micro-step
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()


def test_rows_that_cannot_fit_are_refused_in_plain_words(tiny_model_dir, tmp_path):
    spec = _spec(tiny_model_dir, tmp_path / "adapter", max_length=8)
    with pytest.raises(ValueError, match="max_length"):
        train(spec, Recorder())


def test_step_plan_counts_epochs_accumulation_and_caps():
    params = resolve_params("lora", {"batch_size": 8, "epochs": 2, "warmup_ratio": 0.1})
    plan = plan_steps(16, params)
    assert (plan.steps_per_epoch, plan.total_steps, plan.warmup_steps) == (2, 4, 1)
    # 5 micro-batches, 2 per step -> 3 steps per epoch (the last one takes the leftover batch).
    plan = plan_steps(40, {**params, "gradient_accumulation_steps": 2, "epochs": 1.5})
    assert (plan.micro_batches_per_epoch, plan.steps_per_epoch, plan.total_steps) == (5, 3, 5)
    assert plan_steps(1000, {**params, "max_steps": 7}).total_steps == 7


def test_learning_rate_schedule_warms_up_and_decays_without_a_zero_step():
    params = resolve_params("lora", {"batch_size": 1, "epochs": 1, "warmup_ratio": 0.2})
    plan = plan_steps(10, params)
    factors = [lr_factor(i, plan) for i in range(plan.total_steps)]
    assert plan.warmup_steps == 2
    assert factors[0] > 0 and factors[0] < factors[1] < factors[2] == 1.0
    assert all(a > b for a, b in zip(factors[2:], factors[3:]))
    assert factors[-1] > 0


def test_accumulated_micro_batches_give_the_gradient_of_one_big_batch(tiny_model_dir):
    from worker.training.loading import load_base_model
    from worker.training.peft_factory import build_peft_model
    from worker.training.progress import LoopState
    from worker.training.steps import accumulate_gradients

    base, tokenizer = load_base_model(tiny_model_dir)
    model = build_peft_model(base, "lora", {"dropout": 0.0})
    for name, parameter in model.named_parameters():
        if "lora_B" in name:  # B starts at zero; make the A gradients non-trivial too
            torch.nn.init.normal_(parameter, std=0.02)
    examples = tokenize_rows(tokenizer, MEMO_ROWS[:4], max_length=64).examples
    pad_id = tokenizer.pad_token_id

    def gradients(groups):
        model.zero_grad(set_to_none=True)
        batches = [collate([examples[i] for i in group], pad_id) for group in groups]
        loss = accumulate_gradients(model, batches, "cpu", LoopState(), Recorder())
        return loss, [p.grad.clone() for p in model.parameters() if p.requires_grad]

    one_loss, one_grads = gradients([[0, 1, 2, 3]])
    split_loss, split_grads = gradients([[0, 3], [1, 2]])
    assert split_loss == pytest.approx(one_loss, rel=1e-5)
    for one, split in zip(one_grads, split_grads):
        torch.testing.assert_close(split, one, rtol=1e-4, atol=1e-6)


def test_the_recipe_calls_the_technique_hooks(tiny_model_dir, tmp_path, monkeypatch):
    """A technique's after-step hook runs once per optimizer step with the steps done before it,
    and its packing choice and writer are the ones the run uses."""
    import dataclasses

    from app.domain.techniques import CATALOGUE
    from worker.training import peft_factory
    from worker.training.loop import TrainingRecipe
    from worker.training.saving import AdapterFiles

    calls, closed = [], []

    class RecordingFiles(AdapterFiles):
        def close(self):
            closed.append(True)

    hooked = peft_factory.Builder(
        peft_factory.build_lora_config,
        packs_examples=False,
        files=RecordingFiles,
        after_optimizer_step=lambda model, step: calls.append(step),
    )
    monkeypatch.setitem(peft_factory.BUILDERS, "hooked", hooked)
    # The catalogue is the one source of a technique's defaults: the test technique is LoRA's entry under another key.
    monkeypatch.setitem(CATALOGUE, "hooked", dataclasses.replace(CATALOGUE["lora"], key="hooked"))
    spec = TrainingSpec(
        base_model_dir=str(tiny_model_dir),
        technique="hooked",
        params={"epochs": 10, "max_steps": 3, "packing": "on", "checkpoint_minutes": 0},
        train_rows=MEMO_ROWS,
        validation_rows=[],
        output_dir=str(tmp_path / "adapter"),
    )
    recipe = TrainingRecipe(spec, Recorder())
    assert not recipe.packing_applies()
    run = recipe.run()
    assert run.result.status == "completed" and calls == [0, 1, 2] and closed == [True]
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()


def test_a_failed_pissa_run_leaves_no_starting_adapter_behind(tiny_model_dir, tmp_path, monkeypatch):
    import tempfile

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))

    class Failing(Recorder):
        def on_progress(self, progress):
            raise RuntimeError("the caller broke")

    spec = _spec(tiny_model_dir, tmp_path / "adapter", max_steps=2, checkpoint_minutes=0)
    spec = TrainingSpec(**{**spec.__dict__, "technique": "pissa"})
    with pytest.raises(RuntimeError, match="the caller broke"):
        run_training(spec, Failing())
    assert list(scratch.iterdir()) == []
