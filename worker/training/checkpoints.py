"""Checkpoints: everything a run needs to continue where it stopped, written atomically."""

from __future__ import annotations

import errno
import os
import random
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from worker.training.precision import FP32, Precision
from worker.training.progress import LoopState

CHECKPOINT_FILE = "checkpoint.pt"


def _trainable_state(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().cpu().clone() for name, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(checkpoint_dir: str | os.PathLike, model, optimizer, scheduler, state: LoopState, precision: Precision = FP32) -> Path:
    """Trainable weights, optimizer, schedule, loop state and random generators, written atomically."""
    checkpoint_dir = Path(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    payload = {
        "weights": _trainable_state(model),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": precision.scaler.state_dict() if precision.scaler is not None else None,
        "state": asdict(state),
        "rng": {
            "torch": torch.random.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "python": random.getstate(),
            # numpy's stubs give get_state() the legacy=False overload (a dict), but legacy defaults
            # to True at runtime and the global MT19937 generator returns the 5-tuple.
            "numpy": _numpy_state_as_tensors(np.random.get_state()),  # type: ignore[arg-type]
        },
    }
    tmp = checkpoint_dir / f".{CHECKPOINT_FILE}.partial"
    try:
        torch.save(payload, tmp)
    except Exception as exc:
        tmp.unlink(missing_ok=True)
        # torch's zip writer reports a full disk as "unexpected pos ..."; say what it is.
        if shutil.disk_usage(checkpoint_dir).free < 1024 * 1024:
            raise OSError(errno.ENOSPC, f"No space left on device while writing a checkpoint in {checkpoint_dir}") from exc
        raise
    os.replace(tmp, checkpoint_dir / CHECKPOINT_FILE)
    return checkpoint_dir / CHECKPOINT_FILE


def _numpy_state_as_tensors(state: tuple) -> tuple:
    """numpy's generator state with its key array as a tensor, so the checkpoint loads with
    torch.load(weights_only=True), which refuses pickled numpy arrays."""
    name, keys, position, has_gauss, cached_gaussian = state
    return name, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(cached_gaussian)


def _numpy_state_from_tensors(state: tuple) -> tuple:
    name, keys, position, has_gauss, cached_gaussian = state
    return name, keys.numpy().astype(np.uint32), position, has_gauss, cached_gaussian


def load_checkpoint(checkpoint_dir: str | os.PathLike, model, optimizer, scheduler, precision: Precision = FP32) -> LoopState | None:
    """Restore everything save_checkpoint wrote; None when there is no checkpoint."""
    path = Path(checkpoint_dir) / CHECKPOINT_FILE
    if not path.is_file():
        return None
    # Tensors and plain values only: even a tampered checkpoint cannot run code when loaded.
    payload = torch.load(path, map_location="cpu", weights_only=True)
    parameters = dict(model.named_parameters())
    missing = [name for name in payload["weights"] if name not in parameters]
    if missing:
        raise ValueError(f"The checkpoint does not match this model (e.g. {missing[0]}); delete {path} to start over.")
    with torch.no_grad():
        for name, value in payload["weights"].items():
            parameters[name].copy_(value.to(parameters[name].device))
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    if precision.scaler is not None and payload.get("scaler"):
        precision.scaler.load_state_dict(payload["scaler"])
    torch.random.set_rng_state(payload["rng"]["torch"])
    if payload["rng"].get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(payload["rng"]["cuda"])
    random.setstate(payload["rng"]["python"])
    np.random.set_state(_numpy_state_from_tensors(payload["rng"]["numpy"]))
    return LoopState(**payload["state"])
