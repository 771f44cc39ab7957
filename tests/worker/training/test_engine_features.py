"""Engine features: resume after an interruption, early stopping, evaluation every N steps."""

import pytest
import torch
from safetensors.torch import load_file

from tests.worker.training.test_training_loop import MEMO_ROWS, Recorder
from worker.training.checkpoints import CHECKPOINT_FILE
from worker.training.loop import run_training, train
from worker.training.spec import TrainingSpec

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")


class Interrupted(Exception):
    """Stands in for a worker that dies mid-run."""


class DiesAfter(Recorder):
    def __init__(self, steps: int):
        super().__init__()
        self.steps = steps
        self.checkpoints_written = 0

    def on_progress(self, progress):
        super().on_progress(progress)
        if progress.step == self.steps:
            raise Interrupted

    def on_checkpoint(self):
        self.checkpoints_written += 1


def _spec(model_dir, tmp_path, name, **params):
    return TrainingSpec(
        base_model_dir=str(model_dir),
        technique="lora",
        params={"learning_rate": 3e-3, "epochs": 50, "batch_size": 4, "max_steps": 10, "dropout": 0.1, **params},
        train_rows=MEMO_ROWS,
        validation_rows=MEMO_ROWS[:4],
        output_dir=str(tmp_path / name / "adapter"),
        seed=3,
        checkpoint_dir=str(tmp_path / name / "checkpoint"),
    )


def test_resume_after_an_interruption_gives_the_uninterrupted_adapter(tiny_model_dir, tmp_path):
    # 16 rows / batch 4 = 4 steps per epoch: the kill at step 6 is mid-epoch, after a checkpoint.
    every_step = {"checkpoint_minutes": 1e-9}
    straight = Recorder()
    train(_spec(tiny_model_dir, tmp_path, "straight", checkpoint_minutes=0), straight)

    dies = DiesAfter(6)
    with pytest.raises(Interrupted):
        train(_spec(tiny_model_dir, tmp_path, "resumed", **every_step), dies)
    assert (tmp_path / "resumed" / "checkpoint" / CHECKPOINT_FILE).is_file()
    assert dies.checkpoints_written == 5  # the caller hears of each one (the worker mirrors it to a bucket)
    resumed = Recorder()
    result = train(_spec(tiny_model_dir, tmp_path, "resumed", **every_step), resumed)

    assert result.status == "completed" and result.resumed_from_step == 5
    assert [p.step for p in resumed.progress] == list(range(6, 11))
    assert [p.loss for p in resumed.progress] == pytest.approx([p.loss for p in straight.progress][5:], rel=1e-4)
    a = load_file(str(tmp_path / "straight" / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-6)


def test_validation_loss_every_n_steps_and_early_stopping(tiny_model_dir, tmp_path):
    recorder = Recorder()
    # With a learning rate of 0 the held-out loss never improves on the first check, so training
    # stops after `patience` more checks, whatever the libraries' numerics. (A diverging learning
    # rate of 0.5 stopped early until a dependency release made the tiny model recover from it.)
    run = run_training(
        _spec(
            tiny_model_dir,
            tmp_path,
            "early",
            learning_rate=0.0,
            max_steps=40,
            eval_steps=2,
            early_stopping_patience=2,
            checkpoint_minutes=0,
        ),
        recorder,
    )
    measured = [p.step for p in recorder.progress if p.validation_loss is not None]
    assert measured == [2, 4, 6]
    assert run.result.stopped_early and run.result.steps == 6
    assert run.result.best_validation_loss is not None
    assert all(p.grad_norm is not None and p.memory_bytes for p in recorder.progress)


def test_packed_examples_give_the_same_loss_as_separate_ones(tiny_model_dir):
    from worker.training.data import collate, pack_examples, tokenize_rows
    from worker.training.loading import load_base_model
    from worker.training.steps import batch_loss_sum, predicted_token_count

    model, tokenizer = load_base_model(tiny_model_dir)
    model.eval()
    examples = tokenize_rows(tokenizer, MEMO_ROWS[:6], max_length=64).examples
    packed = pack_examples(examples, max_length=128)
    assert len(packed) < len(examples) and all(len(p) <= 128 for p in packed)
    with torch.no_grad():
        separate = collate(examples, tokenizer.pad_token_id)
        together = collate(packed, tokenizer.pad_token_id)
        assert predicted_token_count(together) == predicted_token_count(separate)  # prompts start with ignored labels
        torch.testing.assert_close(batch_loss_sum(model, together), batch_loss_sum(model, separate), rtol=1e-4, atol=1e-3)


def test_a_packed_run_trains(tiny_model_dir, tmp_path):
    recorder = Recorder()
    result = train(_spec(tiny_model_dir, tmp_path, "packed", packing="on", max_steps=6, checkpoint_minutes=0), recorder)
    assert result.status == "completed" and recorder.progress[-1].loss < recorder.progress[0].loss


class NotAWeight:
    """Anything but tensors and plain values in a checkpoint."""


def test_a_checkpoint_holding_anything_but_tensors_and_plain_values_is_refused(tiny_model_dir, tmp_path):
    import pickle

    from worker.training.checkpoints import load_checkpoint

    checkpoint_dir = tmp_path / "checkpoint"
    checkpoint_dir.mkdir()
    torch.save({"weights": {}, "state": NotAWeight()}, checkpoint_dir / CHECKPOINT_FILE)
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(checkpoint_dir, None, None, None)
