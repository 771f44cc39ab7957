"""A worker's own speed: a few seconds of adapter training steps on a small calibration model.

The calibration model has the layer widths of a small real model (SmolLM2-135M: hidden 576,
MLP 1536, vocabulary 49,152) but four layers, random weights, LoRA on every linear layer, and runs
Tailor's own training step as a job runs it on this device: the fused LoRA dropout and gated MLP,
the batch cut into passes of the automatic micro_batch_tokens (256 tokens on a CPU), the chunked
loss, backward and AdamW, in the job's precision. (It ran whole 768-token batches before, where a
job runs 256-token passes: a CPU worker's jobs then reached 0.48 of its calibrated speed instead
of the 0.7 the estimates assumed.) Its speed is stated in the unit the estimates use
(app/domain/estimates.py: 4 x parameters FLOPs per real token for adapter training), so an
estimate for any base model is tokens x 4 x its parameters / this figure. The result is cached per
device (name, torch version) in DATA_DIR/calibration, so a worker measures once per machine.
"""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("tailor.worker")

CALIBRATION_SHAPE: dict[str, Any] = dict(
    hidden_size=576, num_hidden_layers=4, intermediate_size=1536, num_attention_heads=9, num_key_value_heads=3, vocab_size=49152
)
BATCH, ROW_TOKENS = 8, 96  # rows of the demo data's length; the last 60% carry the loss
MEASURE_SECONDS = 3.0
# Part of the cache's name: a figure measured the way an older version measured is not reused.
# 2: the job's own step (fused dropout and gated MLP, 256-token passes on a CPU).
METHOD_VERSION = 2


def _cache_file(data_dir: Path, device: str) -> Path:
    import torch

    slug = re.sub(r"[^A-Za-z0-9]+", "-", f"{device}-torch-{torch.__version__}").strip("-")[:150] + f"-v{METHOD_VERSION}"
    return Path(data_dir) / "calibration" / f"{slug}.json"


def calibration_passes(device) -> list[dict[str, Any]]:
    """One step's rows (random tokens, the last 60% carrying the loss), cut into the forward passes
    a job makes on `device` (worker.training.memory.micro_batch_tokens), on the CPU."""
    import torch

    from worker.training.data import split_to_token_budget
    from worker.training.memory import micro_batch_tokens

    ids = torch.randint(0, CALIBRATION_SHAPE["vocab_size"], (BATCH, ROW_TOKENS))
    labels = ids.clone()
    labels[:, : int(ROW_TOKENS * 0.4)] = -100
    return [
        {"input_ids": ids[rows], "attention_mask": torch.ones_like(ids[rows]), "labels": labels[rows]}
        for rows in split_to_token_budget(range(BATCH), [ROW_TOKENS] * BATCH, micro_batch_tokens({}, device))
    ]


def measure_flops(seconds: float = MEASURE_SECONDS) -> float:
    """Useful FLOP/s of adapter training here: 4 x the calibration model's parameters per real token."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from app.domain.estimates import model_shape
    from worker.training.loading import pick_device
    from worker.training.peft_factory import build_peft_model
    from worker.training.precision import precision_for
    from worker.training.steps import micro_step, to_device
    from worker.training.swiglu import fuse_swiglu

    device = pick_device()
    _, precision = precision_for({"precision": "auto"}, device)
    torch.manual_seed(0)
    config = LlamaConfig(**CALIBRATION_SHAPE, tie_word_embeddings=True)
    model: Any = LlamaForCausalLM(config)
    model = model.to(device)
    model = build_peft_model(model, "lora", {"r": 16, "alpha": 32})
    fuse_swiglu(model)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    passes = [to_device(batch, device) for batch in calibration_passes(device)]
    window = sum(int((batch["labels"][:, 1:] != -100).sum()) for batch in passes)

    def step() -> None:
        for batch in passes:
            micro_step(model, batch, window, precision, device)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    step()  # warm-up: allocations, kernel selection
    steps, started = 0, time.perf_counter()
    while steps < 2 or time.perf_counter() - started < seconds:
        step()
        steps += 1
    elapsed = time.perf_counter() - started
    shape = model_shape(config.to_dict())
    assert shape is not None
    return 4 * shape.parameters * BATCH * ROW_TOKENS * steps / elapsed


def calibrated_flops(data_dir: Path, device: str) -> float | None:
    """The cached figure for `device`, measuring it first when there is none; None if it fails."""
    cache = _cache_file(data_dir, device)
    try:
        return float(json.loads(cache.read_text())["flops"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        started = time.perf_counter()
        flops = measure_flops()
    except Exception:  # noqa: BLE001 - estimates fall back to the static figures
        log.warning("worker calibration failed", exc_info=True)
        return None
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    tmp.write_text(json.dumps({"device": device, "flops": flops, "measured_at": time.time()}))
    tmp.replace(cache)
    log.info("worker calibration on %s: %.3g useful FLOP/s (%.1f s)", device, flops, time.perf_counter() - started)
    return flops
