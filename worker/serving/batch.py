"""The running batch: one KV cache for every request being decoded, left-padded.

Each row keeps its own position (the count of its real tokens), so left padding never shifts a
row's rotary positions; padded cache slots are zeros masked out by the attention mask. New rows
are prefilled on their own (left-padded among themselves) and their cache is merged into the
running one (the shorter side padded on the left); finished rows are dropped, and cache columns
that are padding for every remaining row are trimmed away. Each forward pass names every row's
adapter (PEFT's mixed-adapter batch, `adapter_names=`, "__base__" for the base model)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

BASE = "__base__"


@dataclass
class Row:
    """One request in the batch."""

    key: Any  # the engine's handle for the request
    adapter: str  # a loaded adapter's name, or BASE
    position: int  # this row's next position id (its real token count so far)


@dataclass
class RunningBatch:
    holder: Any  # .model: the base model, or the PeftModel wrapping it once an adapter is loaded
    rows: list[Row] = field(default_factory=list)
    cache: Any = None  # a transformers DynamicCache, [B, heads, length, dim] per layer
    mask: torch.Tensor | None = None  # [B, length] 1 for real tokens, 0 for padding

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def device(self) -> torch.device:
        return next(self.holder.model.parameters()).device

    def _forward(self, input_ids, attention_mask, position_ids, cache, adapters: Sequence[str]) -> torch.Tensor:
        model = self.holder.model
        kwargs: dict[str, Any] = {}
        if hasattr(model, "peft_config"):
            if model.peft_config:  # a PeftModel: every row names its adapter
                kwargs["adapter_names"] = list(adapters)
            else:  # every adapter evicted: the wrapped layers hold none, the base model answers
                model = model.get_base_model()
        out = model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
            **kwargs,
        )
        return out.logits[:, -1, :]

    @torch.inference_mode()
    def add(self, rows: Sequence[Row], prompts: Sequence[Sequence[int]], pad_id: int) -> torch.Tensor:
        """Prefill new rows and merge them into the batch; returns their next-token logits."""
        from transformers import DynamicCache

        device = self.device
        length = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), length), pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), length), dtype=torch.long)
        positions = torch.zeros((len(prompts), length), dtype=torch.long)
        for i, prompt in enumerate(prompts):
            n = len(prompt)
            ids[i, length - n :] = torch.tensor(prompt, dtype=torch.long)
            mask[i, length - n :] = 1
            positions[i, length - n :] = torch.arange(n)
        ids, mask, positions = ids.to(device), mask.to(device), positions.to(device)
        cache = DynamicCache()
        logits = self._forward(ids, mask, positions, cache, [row.adapter for row in rows])
        for row, prompt in zip(rows, prompts, strict=True):
            row.position = len(prompt)
        self._merge(list(rows), cache, mask)
        return logits

    def _merge(self, rows: list[Row], cache, mask: torch.Tensor) -> None:
        if self.cache is None or not self.rows:
            self.rows, self.cache, self.mask = rows, cache, mask
            return
        assert self.mask is not None
        old, new = self.mask.shape[1], mask.shape[1]
        width = max(old, new)
        for mine, theirs in zip(self.cache.layers, cache.layers, strict=True):
            mine.keys = torch.cat([_pad_left(mine.keys, width), _pad_left(theirs.keys, width)], dim=0)
            mine.values = torch.cat([_pad_left(mine.values, width), _pad_left(theirs.values, width)], dim=0)
        self.mask = torch.cat([_pad_left(self.mask, width, dim=1), _pad_left(mask, width, dim=1)], dim=0)
        self.rows = self.rows + rows

    @torch.inference_mode()
    def step(self, next_tokens: Sequence[int]) -> torch.Tensor:
        """Feed each row its last chosen token; returns every row's next-token logits."""
        assert self.mask is not None and len(next_tokens) == len(self.rows)
        device = self.device
        ids = torch.tensor(list(next_tokens), dtype=torch.long, device=device).unsqueeze(1)
        positions = torch.tensor([row.position for row in self.rows], dtype=torch.long, device=device).unsqueeze(1)
        self.mask = torch.cat([self.mask, torch.ones((len(self.rows), 1), dtype=self.mask.dtype, device=device)], dim=1)
        logits = self._forward(ids, self.mask, positions, self.cache, [row.adapter for row in self.rows])
        for row in self.rows:
            row.position += 1
        return logits

    def keep(self, indices: Sequence[int]) -> None:
        """Keep only these rows (in this order); trim cache columns that are padding for all of them."""
        if len(indices) == len(self.rows):
            return
        if not indices:
            self.rows, self.cache, self.mask = [], None, None
            return
        assert self.mask is not None
        index = torch.tensor(list(indices), dtype=torch.long, device=self.mask.device)
        self.rows = [self.rows[i] for i in indices]
        self.mask = self.mask[index]
        used = self.mask.any(dim=0).nonzero()
        start = int(used[0]) if used.numel() else self.mask.shape[1]
        self.mask = self.mask[:, start:]
        for layer in self.cache.layers:
            layer.keys = layer.keys[index, :, start:, :]
            layer.values = layer.values[index, :, start:, :]


def _pad_left(tensor: torch.Tensor, width: int, dim: int = 2) -> torch.Tensor:
    missing = width - tensor.shape[dim]
    if missing <= 0:
        return tensor
    pad = [0, 0] * (tensor.dim() - dim - 1) + [missing, 0]
    return F.pad(tensor, pad)
