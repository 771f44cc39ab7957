"""The web's torch-free estimates against what the engine really does on the tiny models."""

import json

import pytest

from app.domain.estimates import WorkerClass, estimate_job, model_shape, trainable_parameters
from app.domain.techniques import CATALOGUE, validate_params
from worker.training.loading import load_base_model
from worker.training.peft_factory import BuildContext, build_peft_model

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")


@pytest.mark.parametrize("technique", [k for k in CATALOGUE if k != "qlora"])
def test_trainable_parameters_match_peft_exactly_or_closely(technique, tiny_model_dir):
    config = json.loads((tiny_model_dir / "config.json").read_text())
    params = validate_params(CATALOGUE[technique], {})
    model, _ = load_base_model(tiny_model_dir)
    peft_model = build_peft_model(model, technique, params, BuildContext(total_steps=100, tokenizer_dir=str(tiny_model_dir)))
    actual = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    expected, _ = trainable_parameters(model_shape(config), technique, params)
    assert expected == pytest.approx(actual, rel=0.02), (technique, expected, actual)


_FRESH_WORKER_RUN = """
import json, sys
from app.domain.techniques import CATALOGUE, validate_params
from worker.training.loop import run_training
from worker.training.spec import TrainingSpec
from tests.worker.training.test_training_loop import MEMO_ROWS, Recorder
params = validate_params(CATALOGUE["lora"], json.loads(sys.argv[3]))
result = run_training(TrainingSpec(sys.argv[1], "lora", params, MEMO_ROWS, MEMO_ROWS[:2], sys.argv[2]), Recorder()).result
print("RESULT", json.dumps({"peak": result.peak_memory_bytes, "trainable": result.trainable_parameters,
                            "tokens": result.tokens_seen}))
"""


def test_memory_and_adapter_size_estimates_are_within_30_percent(tiny_model_dir, tmp_path):
    # Peak memory is a worker process's: measured in a fresh process, as a worker runs a job.
    import subprocess
    import sys
    from pathlib import Path

    config = json.loads((tiny_model_dir / "config.json").read_text())
    raw = {"max_steps": 8, "epochs": 50, "checkpoint_minutes": 0, "max_length": 64}
    params = validate_params(CATALOGUE["lora"], raw)
    root = Path(__file__).resolve().parents[3]
    done = subprocess.run(
        [sys.executable, "-c", _FRESH_WORKER_RUN, str(tiny_model_dir), str(tmp_path / "adapter"), json.dumps(raw)],
        capture_output=True,
        text=True,
        cwd=root,
        timeout=300,
    )
    line = next((out for out in done.stdout.splitlines() if out.startswith("RESULT ")), None)
    assert line, done.stderr[-2000:]
    actual = json.loads(line[len("RESULT ") :])
    tokens_per_row = actual["tokens"] / (8 * 8)
    estimate = estimate_job(
        config, "lora", params, task="instruction", n_rows=18, tokens_per_row=tokens_per_row, worker=WorkerClass("cpu", cores=2)
    )
    adapter_bytes = (tmp_path / "adapter" / "adapter_model.safetensors").stat().st_size
    assert estimate.trainable_parameters == actual["trainable"]
    assert estimate.adapter_bytes == pytest.approx(adapter_bytes, rel=0.3)
    assert estimate.peak_memory_bytes == pytest.approx(actual["peak"], rel=0.3), (estimate.peak_memory_bytes, actual["peak"])
