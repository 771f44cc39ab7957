"""Every catalogue technique trains on the tiny Llama: the loss is finite and drops on a
memorisable set, the adapter saves, reloads with plain PEFT (or transformers, for full
fine-tuning) and reproduces the trained logits."""

import json
import math

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from app.domain.techniques import CATALOGUE, validate_params
from tests.worker.training.test_training_loop import MEMO_ROWS, Recorder
from worker.training.data import collate, tokenize_rows
from worker.training.loading import load_base_model
from worker.training.loop import run_training
from worker.training.peft_factory import BUILDERS, FULL_FINE_TUNING, quantization_bits
from worker.training.spec import TrainingSpec

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")

# Few steps, high-ish rates: each technique must show learning within ~15 steps.
MATRIX_OVERRIDES = {
    "lora": {"learning_rate": 3e-3},
    "qlora": {"learning_rate": 3e-3, "bits": "4"},
    "qlora-8bit": {"learning_rate": 3e-3, "bits": "8"},
    "dora": {"learning_rate": 3e-3},
    "rslora": {"learning_rate": 3e-3, "r": 8},
    "pissa": {"learning_rate": 1e-3},
    "adalora": {"learning_rate": 2e-2},
    "loha": {"learning_rate": 3e-3},
    "lokr": {"learning_rate": 3e-3},
    "vera": {"learning_rate": 1e-1, "r": 64},
    "ia3": {"learning_rate": 3e-2},
    "prompt_tuning": {"learning_rate": 1e-1, "num_virtual_tokens": 8},
    "prefix_tuning": {"learning_rate": 1e-1, "num_virtual_tokens": 8},
    "p_tuning": {"learning_rate": 1e-2, "num_virtual_tokens": 8},
    "full": {"learning_rate": 1e-3},
}
STEPS = 12


def test_every_catalogue_technique_has_a_builder_and_a_matrix_row():
    for key in CATALOGUE:
        assert key in BUILDERS, key
        assert key in MATRIX_OVERRIDES, key


def _logits(model, tokenizer):
    examples = tokenize_rows(tokenizer, MEMO_ROWS[:4], max_length=64).examples
    batch = collate(examples, tokenizer.pad_token_id)
    model.eval()
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()


@pytest.mark.parametrize("row", list(MATRIX_OVERRIDES))
def test_technique_trains_saves_and_reloads(row, tiny_model_dir, tmp_path):
    technique = row.split("-")[0]
    raw = {
        "epochs": 50,
        "batch_size": 8,
        "max_steps": STEPS,
        "warmup_ratio": 0.0,
        "max_length": 64,
        "checkpoint_minutes": 0,
        **MATRIX_OVERRIDES[row],
    }
    params = validate_params(CATALOGUE[technique], raw)
    output_dir = tmp_path / "adapter"
    recorder = Recorder()
    spec = TrainingSpec(
        base_model_dir=str(tiny_model_dir),
        technique=technique,
        params=params,
        train_rows=MEMO_ROWS,
        validation_rows=MEMO_ROWS[:4],
        output_dir=str(output_dir),
    )
    run = run_training(spec, recorder)

    losses = [p.loss for p in recorder.progress]
    assert run.result.status == "completed" and len(losses) == STEPS
    assert all(math.isfinite(loss) for loss in losses)
    first, last = losses[0], sum(losses[-3:]) / 3
    assert last < 0.85 * first, f"{row}: loss {first:.3f} -> {last:.3f}"
    assert 0 < run.result.trainable_parameters <= run.result.total_parameters

    trained = _logits(run.model, run.tokenizer)
    bits = quantization_bits(technique, params)
    if technique == FULL_FINE_TUNING:
        assert (output_dir / "model.safetensors").is_file()
        reloaded = AutoModelForCausalLM.from_pretrained(str(output_dir), dtype=torch.float32)
    else:
        assert (output_dir / "adapter_model.safetensors").is_file()
        config = json.loads((output_dir / "adapter_config.json").read_text())
        assert config["peft_type"]
        base, _ = load_base_model(tiny_model_dir, torch.device("cpu"), quantization_bits=bits)
        reloaded = PeftModel.from_pretrained(base, str(output_dir))
    tolerance = 1e-3 if technique in ("pissa",) or bits else 1e-4
    torch.testing.assert_close(_logits(reloaded, run.tokenizer), trained, rtol=tolerance, atol=tolerance)
