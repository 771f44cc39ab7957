"""What a run records so that it can be traced and repeated: the data's fingerprint and the
software and hardware it ran on."""

from __future__ import annotations

import hashlib
import json
import platform
from importlib import metadata
from typing import Any

import torch


def data_fingerprint(task: str, train_rows, validation_rows) -> str:
    """SHA-256 of the exact rows a run learned from and was measured on."""
    blob = json.dumps(
        [
            task,
            [list(r) if isinstance(r, (tuple, list)) else r for r in train_rows],
            [list(r) if isinstance(r, (tuple, list)) else r for r in validation_rows],
        ],
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def environment_record(device, dtype) -> dict[str, Any]:
    """Package versions and hardware: what someone needs to rerun the job the same way."""
    versions = {}
    for package in ("torch", "transformers", "peft", "bitsandbytes", "accelerate", "tokenizers", "safetensors", "numpy"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    record = {"python": platform.python_version(), "packages": versions, "device": str(device), "dtype": str(dtype).replace("torch.", "")}
    record["allocator"] = _allocator()  # the CPU peak memory depends on it (app/worker_environment.py)
    if torch.device(device).type == "cuda":
        record["gpu"] = torch.cuda.get_device_name(device)
    return record


def _allocator(maps: str = "/proc/self/maps") -> str:
    """ "jemalloc" when this process has it mapped (workers preload it where installed), else "system"."""
    try:
        with open(maps) as f:
            return "jemalloc" if "libjemalloc" in f.read() else "system"
    except OSError:
        return "system"
