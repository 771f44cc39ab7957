"""Exports beside the adapter zip: a merged full model for the LoRA family (a worker builds it)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from app import queue
from app.models import Adapter
from app.techniques import CATALOGUE

# Techniques whose update folds into the base weights (PEFT merge_and_unload): the LoRA family and
# IA³; prompt-based techniques add virtual tokens instead, and full fine-tuning is already a model.
MERGEABLE_TECHNIQUES = frozenset(t.key for t in CATALOGUE.values() if t.family in ("lora", "adapter"))
# GGUF adapters for llama.cpp need llama.cpp's own converter (convert_lora_to_gguf.py), which no
# package installed here provides; the UI says so instead of offering a broken button.
GGUF_EXPORT_AVAILABLE = False


def merged_key(adapter_id: int) -> str:
    return f"exports/adapter-{adapter_id}/merged.zip"


def request_merged_export(db: Session, adapter: Adapter) -> None:
    if adapter.technique not in MERGEABLE_TECHNIQUES:
        raise ValueError(f"{adapter.technique} adapters cannot be merged into the base model; only the LoRA family can.")
    adapter.metrics = {**(adapter.metrics or {}), "merged_export_state": "queued", "merged_export_error": None}
    db.commit()
    queue.send_export(adapter.id)
