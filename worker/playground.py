"""The playground's worker side: keep a base model loaded with adapters plugged in (PEFT
`load_adapter` / `set_adapter`, one model copy however many adapters), stream answers to Redis."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from app.base_models import get_base_model
from app.config import get_settings
from app.db import session_scope
from app.models import Adapter
from app.queue import redis_client
from app.services.artifacts import get_artifact_store
from app.services.playground import TTL_SECONDS, load_request, stream_key
from worker.rows import require_row

log = logging.getLogger("tailor.playground")


@dataclass
class LoadedBase:
    location: str
    model: Any  # a transformers model; a PeftModel (load_adapter, set_adapter, disable_adapter) once an adapter is in
    tokenizer: Any
    adapters: set[str] = field(default_factory=set)


_LOADED: dict[str, LoadedBase] = {}


def _loaded_base(base_model: str) -> LoadedBase:
    """One base model per worker process, kept between requests (the previous one is dropped)."""
    entry = get_base_model(get_settings(), base_model)
    if entry is None or not entry.available:
        raise RuntimeError(f"The base model {base_model!r} is not installed on this worker.")
    if entry.location not in _LOADED:
        from worker.training.loading import load_base_model

        _LOADED.clear()
        model, tokenizer = load_base_model(entry.location)
        _LOADED[entry.location] = LoadedBase(entry.location, model.eval(), tokenizer)
    return _LOADED[entry.location]


def _plug_in(loaded: LoadedBase, adapter_id: int) -> str:
    """Load the adapter into the shared model once; returns its adapter name."""
    from peft import PeftModel

    name = f"adapter-{adapter_id}"
    if name in loaded.adapters:
        return name
    with session_scope() as db:
        adapter = require_row(db, Adapter, adapter_id)  # deleted since the request: RowGone, shown as the error
        folder = str(get_artifact_store().path(adapter.storage_key))
    if isinstance(loaded.model, PeftModel):
        loaded.model.load_adapter(folder, adapter_name=name)
    else:
        loaded.model = PeftModel.from_pretrained(loaded.model, folder, adapter_name=name).eval()
    loaded.adapters.add(name)
    return name


def run_generation(request_id: str) -> str:
    from contextlib import nullcontext

    from worker.evaluation.generate import stream_answer

    client = redis_client()
    key = stream_key(request_id)
    request = load_request(request_id)
    if request is None:
        return "expired"
    try:
        loaded = _loaded_base(request.base_model)
        names = {target: _plug_in(loaded, int(target.split(":")[1])) for target in request.targets if target != "base"}
        for target in request.targets:
            if target == "base":
                context = loaded.model.disable_adapter() if names else nullcontext()
            else:
                loaded.model.set_adapter(names[target])
                context = nullcontext()
            with context:
                for piece in stream_answer(
                    loaded.model, loaded.tokenizer, request.prompt, max_new_tokens=request.max_new_tokens, temperature=request.temperature
                ):
                    if piece:
                        client.xadd(key, {"target": target, "text": piece})
            client.xadd(key, {"target": target, "done": "1"})
        client.xadd(key, {"finished": "1"})
        return "finished"
    except Exception as exc:  # noqa: BLE001 - the page shows the reason instead of waiting forever
        log.exception("playground request %s failed", request_id)
        client.xadd(key, {"error": f"Generation failed: {type(exc).__name__}: {exc}"[:500]})
        return "failed"
    finally:
        client.expire(key, TTL_SECONDS)
