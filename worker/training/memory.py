"""Memory: peak-use accounting per run and whether to trade compute for memory."""

from __future__ import annotations

import resource
from collections.abc import Callable, Sequence
from typing import Any

import torch

from app.domain.estimates import CPU_MICRO_BATCH_TOKENS, WorkerClass, estimate_job, read_model_config


def reset_peak_memory(device: torch.device) -> None:
    """Start peak-memory accounting afresh for this run (a worker process runs many jobs)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:  # Linux: writing 5 to clear_refs resets the peak resident set (VmHWM) of this process
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_memory_bytes(device: torch.device) -> int:
    """GPU: peak allocated by torch. CPU: the process's peak resident set since the last reset."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux reports KiB


def wants_gradient_checkpointing(params: dict[str, Any], device, fits_without: Callable[[], bool] = lambda: False) -> bool:
    """Recompute activations in the backward pass to save memory: "on"; or "auto" on a GPU where the
    job would not fit without (`fits_without`: fits_without_recompute for this job)."""
    choice = str(params.get("gradient_checkpointing", "auto"))
    if choice == "on":
        return True
    return choice == "auto" and torch.device(device).type == "cuda" and not fits_without()


def fits_without_recompute(
    model_dir: str,
    technique: str,
    params: dict[str, Any],
    task: str,
    lengths: Sequence[int],
    device_memory_bytes: int,
    *,
    quantized_bits: int = 0,
    num_labels: int = 0,
) -> bool:
    """Whether this job's activations fit on a GPU of `device_memory_bytes` without recomputation:
    the form's estimate (app/domain/estimates.py, the same decision), every row as long as the
    longest. False when the model's config cannot be read or sized (recompute, to be safe)."""
    config = read_model_config(model_dir)
    if config is None or not lengths:
        return False
    try:
        estimate = estimate_job(
            config,
            technique,
            {**params, "gradient_checkpointing": "auto"},
            task=task,
            n_rows=len(lengths),
            tokens_per_row=float(max(lengths)),
            worker=WorkerClass("cuda", memory_bytes=device_memory_bytes),
            num_labels=num_labels,
            quantized_bits=quantized_bits,
        )
    except (ValueError, KeyError, TypeError, ZeroDivisionError):  # a shape the estimate does not know: recompute, to be safe
        return False
    return estimate is not None and not estimate.gradient_checkpointing


def micro_batch_tokens(params: dict[str, Any], device) -> int:
    """The padded-token budget of one forward pass: the parameter, or automatic (CPU: CPU_MICRO_BATCH_TOKENS;
    GPU: 0 = the whole batch, where gradient checkpointing already keeps activations small)."""
    # CPU_MICRO_BATCH_TOKENS: on the demo model (SmolLM2-135M, ~1.15 MB kept per token with the fused
    # LoRA dropout and SwiGLU) a 256-token pass keeps ~0.3 GB, and a CPU's matrix products are about
    # as fast per token at this size as for a whole batch.
    chosen = int(params.get("micro_batch_tokens", 0) or 0)
    if chosen > 0:
        return chosen
    return CPU_MICRO_BATCH_TOKENS if torch.device(device).type == "cpu" else 0
