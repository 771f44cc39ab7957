"""Exports of a trained adapter, in the background on a worker: a merged full model (LoRA family),
written as safetensors and zipped, and a GGUF adapter for llama.cpp."""

from __future__ import annotations

import json
import logging
import shutil
import zipfile
from pathlib import Path

from app.base_models import get_base_model
from app.config import get_settings
from app.db import session_scope
from app.models import Adapter
from app.services import adapter_workflows
from app.services.adapter_workflows import GGUF_EXPORT, MERGED_EXPORT, Workflow
from app.services.artifacts import get_artifact_store
from app.services.exports import MERGEABLE_TECHNIQUES, gguf_key, gguf_unavailable_reason, merged_key

log = logging.getLogger("tailor.export")


def merge_adapter(base_dir: str, adapter_dir: str, out_dir: Path) -> Path:
    """Fold the adapter into the base weights and save a plain transformers model folder."""
    from peft import PeftModel

    from worker.training.loading import load_base_model

    model, tokenizer = load_base_model(base_dir)
    merged = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
    merged.save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(out_dir))
    return out_dir


def run_merged_export(adapter_id: int) -> str:
    store = get_artifact_store()
    with session_scope() as db:
        adapter = db.get(Adapter, adapter_id)
        if adapter is None:
            return _gone(adapter_id, MERGED_EXPORT)
        base = get_base_model(get_settings(), adapter.base_model)
        technique = adapter.technique
        adapter_dir = str(store.path(adapter.storage_key))
    if not _start(adapter_id, MERGED_EXPORT):
        return "not-started"
    workdir = store.temp_path("-merge")
    try:
        if technique not in MERGEABLE_TECHNIQUES:
            raise ValueError(f"{technique} adapters cannot be merged into the base weights; only the LoRA family can.")
        if base is None or not base.available:
            raise ValueError(f"The base model {adapter.base_model!r} is not installed on this worker.")
        folder = merge_adapter(base.location, adapter_dir, workdir / "model")
        archive = workdir / "merged.zip"
        with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as out:  # weights barely compress
            for path in sorted(folder.rglob("*")):
                if path.is_file():
                    out.write(path, f"merged-model/{path.relative_to(folder).as_posix()}")
        store.put_file(merged_key(adapter_id), archive)
    except Exception as exc:  # noqa: BLE001 - the adapter stays usable; the page says why
        log.exception("adapter %s: merged export failed", adapter_id)
        _finish(adapter_id, MERGED_EXPORT, f"{type(exc).__name__}: {exc}"[:500])
        return "failed"
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    _finish(adapter_id, MERGED_EXPORT)
    return "done"


def run_gguf_export(adapter_id: int) -> str:
    """Write the adapter as a llama.cpp LoRA GGUF (only the base model's config.json is read)."""
    from worker.gguf_export import write_lora_gguf

    settings = get_settings()
    store = get_artifact_store()
    with session_scope() as db:
        adapter = db.get(Adapter, adapter_id)
        if adapter is None:
            return _gone(adapter_id, GGUF_EXPORT)
        reason = gguf_unavailable_reason(settings, adapter)
        base = get_base_model(settings, adapter.base_model)
        adapter_dir = store.path(adapter.storage_key)
        name = adapter.name
    if not _start(adapter_id, GGUF_EXPORT):
        return "not-started"
    out = store.temp_path(".gguf")
    try:
        if reason or base is None:  # no reason means gguf_unavailable_reason found the base model
            raise ValueError(reason or f"The base model {adapter.base_model!r} is not installed on this worker.")
        base_config = json.loads((Path(base.location) / "config.json").read_text())
        info = write_lora_gguf(adapter_dir, base_config, out, name=name)
        store.put_file(gguf_key(adapter_id), out)
    except Exception as exc:  # noqa: BLE001 - the adapter stays usable; the page says why
        log.exception("adapter %s: GGUF export failed", adapter_id)
        _finish(adapter_id, GGUF_EXPORT, f"{type(exc).__name__}: {exc}"[:500])
        return "failed"
    finally:
        out.unlink(missing_ok=True)
    _finish(adapter_id, GGUF_EXPORT, gguf_export_bytes=info.size_bytes)
    return "done"


def _gone(adapter_id: int, workflow: Workflow) -> str:
    """The adapter was deleted after the export was asked for: nothing to export, nothing to record."""
    log.info("adapter %s: %s not started (adapter deleted)", adapter_id, workflow.key)
    return "not-started"


def _start(adapter_id: int, workflow: Workflow) -> bool:
    """running, unless a duplicate wake-up finds the export running already."""
    with session_scope() as db:
        if adapter_workflows.start(db, adapter_id, workflow):
            return True
    log.info("adapter %s: %s not started (running already)", adapter_id, workflow.key)
    return False


def _finish(adapter_id: int, workflow: Workflow, error: str | None = None, **values) -> None:
    with session_scope() as db:
        adapter_workflows.finish(db, adapter_id, workflow, error, **values)
