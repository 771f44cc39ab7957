"""Exports beside the adapter zip, built by a worker: a merged full model (LoRA family) and a
GGUF adapter for llama.cpp (plain LoRA on a Llama-architecture base)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from sqlalchemy.orm import Session

from app import queue
from app.base_models import get_base_model
from app.config import Settings
from app.domain.techniques import CATALOGUE
from app.models import Adapter
from app.services import adapter_workflows

# Techniques whose update folds into the base weights (PEFT merge_and_unload): the LoRA family and
# IA³; prompt-based techniques add virtual tokens instead, and full fine-tuning is already a model.
MERGEABLE_TECHNIQUES = frozenset(t.key for t in CATALOGUE.values() if t.family in ("lora", "adapter"))
# Techniques saved as plain PEFT LoRA matrices (A, B), which llama.cpp applies with `--lora`.
# DoRA, AdaLoRA, LoHa, LoKr, VeRA and IA³ change the weights in ways llama.cpp cannot represent.
GGUF_TECHNIQUES = frozenset({"lora", "qlora", "rslora", "pissa"})
# Base architectures whose llama.cpp tensor layout the worker writes (transformers model_type).
GGUF_BASE_TYPES = frozenset({"llama"})


def merged_key(adapter_id: int) -> str:
    return f"exports/adapter-{adapter_id}/merged.zip"


def request_merged_export(db: Session, adapter: Adapter) -> bool:
    """Queue the merged export (a worker is woken once this commits); False while one is pending."""
    if adapter.technique not in MERGEABLE_TECHNIQUES:
        raise ValueError(f"{adapter.technique} adapters cannot be merged into the base model; only the LoRA family can.")
    return adapter_workflows.request_and_wake(db, adapter, adapter_workflows.MERGED_EXPORT, queue.send_export)


def gguf_key(adapter_id: int) -> str:
    return f"exports/adapter-{adapter_id}/adapter.gguf"


def gguf_unavailable_reason(settings: Settings, adapter: Adapter) -> str | None:
    """Why a llama.cpp (GGUF) adapter cannot be made for this adapter, in plain words; None when it can."""
    name = CATALOGUE[adapter.technique].name if adapter.technique in CATALOGUE else adapter.technique
    if adapter.technique not in GGUF_TECHNIQUES:
        return (
            f"llama.cpp loads plain LoRA adapters; {name} changes the model in a way it cannot apply. Export a merged model instead."
            if adapter.technique in MERGEABLE_TECHNIQUES
            else f"llama.cpp loads plain LoRA adapters, not {name}."
        )
    if importlib.util.find_spec("gguf") is None:
        return "The gguf package is not installed on this server (pip install gguf)."
    base = get_base_model(settings, adapter.base_model)
    config_path = Path(base.location) / "config.json" if base is not None and base.source == "folder" else None
    if config_path is None or not config_path.is_file():
        return f"The base model {adapter.base_model!r} is not installed here, so its architecture is unknown."
    model_type = json.loads(config_path.read_text()).get("model_type")
    if model_type not in GGUF_BASE_TYPES:
        return f"GGUF adapters are written for Llama-architecture bases only; {adapter.base_model} is {model_type or 'of an unknown type'}."
    return None


def gguf_unavailable_reasons(settings: Settings, adapters: list[Adapter]) -> dict[int, str]:
    """gguf_unavailable_reason for a list of adapters (id -> reason, only those without a GGUF
    export), worked out once per technique and base model: the answer depends on nothing else, and
    each look costs a scan of the models folder and of the import path (the adapters page lists 50)."""
    by_kind: dict[tuple[str, str], str | None] = {}
    reasons: dict[int, str] = {}
    for adapter in adapters:
        kind = (adapter.technique, adapter.base_model)
        if kind not in by_kind:
            by_kind[kind] = gguf_unavailable_reason(settings, adapter)
        if reason := by_kind[kind]:
            reasons[adapter.id] = reason
    return reasons


def request_gguf_export(db: Session, settings: Settings, adapter: Adapter) -> bool:
    """Queue the GGUF export (a worker is woken once this commits); False while one is pending."""
    reason = gguf_unavailable_reason(settings, adapter)
    if reason:
        raise ValueError(reason)
    return adapter_workflows.request_and_wake(db, adapter, adapter_workflows.GGUF_EXPORT, queue.send_export_gguf)
