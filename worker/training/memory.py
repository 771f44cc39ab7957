"""Memory: peak-use accounting per run and whether to trade compute for memory."""

from __future__ import annotations

import resource
from typing import Any

import torch

from app.domain.estimates import CPU_MICRO_BATCH_TOKENS


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


def wants_gradient_checkpointing(params: dict[str, Any], device) -> bool:
    """ "on", or "auto" on a GPU: recompute activations in the backward pass to save memory."""
    choice = str(params.get("gradient_checkpointing", "auto"))
    return choice == "on" or (choice == "auto" and torch.device(device).type == "cuda")


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
