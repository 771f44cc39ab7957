"""Gradient checkpointing "auto" on a GPU recomputes activations only where the job would not fit
without: a large GPU trains at full speed, a small one still fits. The form's estimate and the
worker take the same decision (app/domain/estimates.py recompute_needed)."""

from __future__ import annotations

import json

import pytest
import torch

from app.domain.estimates import WorkerClass, estimate_job, recompute_needed
from worker.training.memory import fits_without_recompute, wants_gradient_checkpointing

# Qwen2.5-1.5B's shape (the GPU check's larger model)
QWEN_1_5B = {
    "model_type": "llama", "hidden_size": 1536, "num_hidden_layers": 28, "intermediate_size": 8960,
    "num_attention_heads": 12, "num_key_value_heads": 2, "vocab_size": 151936, "tie_word_embeddings": True,
}  # fmt: skip
PARAMS = {"batch_size": 8, "max_length": 1024, "epochs": 1}
GB = 1024**3


def _estimate(memory_bytes, params=PARAMS, technique="lora"):
    worker = WorkerClass("cuda", memory_bytes=memory_bytes)
    got = estimate_job(QWEN_1_5B, technique, params, task="instruction", n_rows=200, tokens_per_row=1024, worker=worker)
    assert got is not None
    return got


def test_a_large_gpu_keeps_its_activations_and_a_small_one_recomputes():
    h200, l4, unknown = _estimate(141 * GB), _estimate(24 * GB), _estimate(None)
    assert not h200.gradient_checkpointing and h200.fits  # 8 x 1024 tokens of a 1.5 B model fit in 141 GB as they are
    assert l4.gradient_checkpointing and l4.fits  # 24 GB: only with recomputation
    assert unknown.gradient_checkpointing  # a GPU of unknown size: recompute, as before
    assert h200.peak_memory_bytes > 5 * l4.peak_memory_bytes  # what recomputation saves
    forced = _estimate(141 * GB, {**PARAMS, "gradient_checkpointing": "on"})
    assert forced.gradient_checkpointing and forced.peak_memory_bytes == l4.peak_memory_bytes
    assert not _estimate(24 * GB, {**PARAMS, "gradient_checkpointing": "off"}).gradient_checkpointing  # the person's choice stands
    cpu = estimate_job(QWEN_1_5B, "lora", PARAMS, task="instruction", n_rows=200, tokens_per_row=1024, worker=WorkerClass("cpu"))
    assert cpu is not None and not cpu.gradient_checkpointing  # "auto" on a CPU: never


def test_the_threshold_keeps_a_tenth_of_the_device_free():
    assert not recompute_needed(89 * GB, 100 * GB) and recompute_needed(91 * GB, 100 * GB) and recompute_needed(1, None)


def test_the_worker_takes_the_same_decision_for_its_longest_rows(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(QWEN_1_5B))
    lengths = [300, 700, 1024]
    assert fits_without_recompute(str(tmp_path), "lora", PARAMS, "instruction", lengths, 141 * GB)
    assert not fits_without_recompute(str(tmp_path), "lora", PARAMS, "instruction", lengths, 24 * GB)
    assert fits_without_recompute(str(tmp_path), "lora", PARAMS, "instruction", [64] * 3, 24 * GB)  # short rows fit as they are
    assert not fits_without_recompute(str(tmp_path / "missing"), "lora", PARAMS, "instruction", lengths, 141 * GB)  # unreadable
    assert not fits_without_recompute(str(tmp_path), "no-such-technique", PARAMS, "instruction", lengths, 141 * GB)


@pytest.mark.parametrize(
    ("choice", "device", "fits", "expected"),
    [
        ("on", "cpu", True, True),
        ("off", "cuda", False, False),
        ("auto", "cpu", False, False),
        ("auto", "cuda", True, False),
        ("auto", "cuda", False, True),
    ],
)
def test_the_choice_on_each_device(choice, device, fits, expected):
    asked = []

    def fits_without():
        asked.append(True)
        return fits

    assert wants_gradient_checkpointing({"gradient_checkpointing": choice}, torch.device(device), fits_without) is expected
    assert bool(asked) == (choice == "auto" and device == "cuda")  # sized only where it decides
