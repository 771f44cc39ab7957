"""Pre-launch estimates (memory, time, trainable parameters, adapter size) from a model's
config.json and the data's size. Plain arithmetic: the web never imports torch."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any


def read_model_config(location: str | None) -> dict | None:
    """The config.json of a local model folder, or None when there is none (or it is unreadable)."""
    if not location:
        return None
    path = Path(location) / "config.json"
    try:
        stat = path.stat()
    except OSError:
        return None
    return _read_config(str(path), stat.st_mtime_ns)


@lru_cache(maxsize=64)
def _read_config(path: str, _mtime_ns: int) -> dict | None:
    try:
        config = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) else None
