"""Memory: peak-use accounting per run and whether to trade compute for memory."""

from __future__ import annotations

import resource
from typing import Any

import torch

from app.domain.estimates import CPU_MICRO_BATCH_TOKENS

# glibc's malloc raises its mmap threshold each time a large block is freed, after which blocks of
# that size come from the heap and stay in the process when freed: on the CPU a LoRA step's
# resident set then grew to about twice what autograd keeps (2.7 instead of 1.4 MB per token on
# the demo model, measured). A fixed threshold keeps large tensors in mmap'd blocks that go back
# to the system when freed, so the peak is what the step uses.
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 128 * 1024


def return_freed_tensors_to_the_system() -> bool:
    """Fix glibc's mmap threshold (see above); False where there is no glibc to ask."""
    try:
        import ctypes

        return bool(ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
    except (OSError, AttributeError):
        return False


def reset_peak_memory(device: torch.device) -> None:
    """Start peak-memory accounting afresh for this run (a worker process runs many jobs)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    return_freed_tensors_to_the_system()
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
