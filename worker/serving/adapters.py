"""The adapter LRU: many LoRA adapters plugged into the one base model, read in the background.

A request names an AdapterRef (id, storage key, version). A loaded adapter is used at once; a cold
one is read from the artifact store (the download, the config and the safetensors weights) on a
background thread while the decode loop keeps running, and plugged into the model between two
decode steps (`add_adapter` + `set_peft_model_state_dict`, which only copies tensors already in
memory). A new `version` of the same id loads beside the old one; the old one is dropped once no
running row uses it. Past the count or memory budget the least recently used adapters that no
running row uses are removed with `delete_adapter`.

Only plain LoRA-type adapters (PEFT type LORA: LoRA, QLoRA-trained, rsLoRA, DoRA, PiSSA saved as
LoRA) are mixed in the batch; any other PEFT type is marked `solo` and served by worker.serving.solo.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.services.serving_protocol import AdapterRef
from worker.serving.prompts import ServeError

log = logging.getLogger("tailor.engine.adapters")

MIXABLE_TYPES = {"LORA"}
WEIGHTS_FILE = "adapter_model.safetensors"


def adapter_name(ref: AdapterRef) -> str:
    version = "".join(ch if ch.isalnum() else "_" for ch in ref.version)[:40]
    return f"a{ref.id}_{version}" if version else f"a{ref.id}"


@dataclass
class ReadAdapter:
    """An adapter's files, read into memory off the decode loop."""

    folder: Path
    config: Any  # a PeftConfig
    weights: dict[str, Any] | None  # tensors (None for a solo adapter, which loads from its folder)
    nbytes: int
    mixable: bool


def gone(ref: AdapterRef) -> ServeError:
    return ServeError(404, "model_not_found", f"The adapter's files (adapter {ref.id}) are no longer available.")


def read_adapter(ref: AdapterRef) -> ReadAdapter:
    """Download (if the store is a bucket) and read an adapter; a 404 ServeError if it is gone."""
    from peft import PeftConfig
    from safetensors.torch import load_file

    from app.services.artifacts import get_artifact_store

    try:
        folder = get_artifact_store().path(ref.storage_key)
    except Exception as exc:  # noqa: BLE001 - a refused key or a bucket without the object
        raise gone(ref) from exc
    if not (folder / "adapter_config.json").is_file():
        raise gone(ref)
    try:
        config = PeftConfig.from_pretrained(str(folder))
    except Exception as exc:  # noqa: BLE001 - unreadable config: answered as a 404 for this adapter
        raise gone(ref) from exc
    peft_type = str(getattr(config.peft_type, "value", config.peft_type))
    if peft_type not in MIXABLE_TYPES:
        return ReadAdapter(folder, config, None, 0, mixable=False)
    if not (folder / WEIGHTS_FILE).is_file():
        raise gone(ref)
    weights = load_file(str(folder / WEIGHTS_FILE))
    nbytes = sum(t.numel() * t.element_size() for t in weights.values())
    return ReadAdapter(folder, config, weights, nbytes, mixable=True)


@dataclass
class Loaded:
    name: str
    ref: AdapterRef
    nbytes: int


class AdapterCache:
    """Adapters in the model, least recently used first; cold ones read on a background thread."""

    def __init__(self, holder, *, max_adapters: int, memory_bytes: int):
        self.holder = holder  # has .model (the base model, or a PeftModel once an adapter is in) and .device
        self.max_adapters = max_adapters
        self.memory_bytes = memory_bytes
        self.loaded: OrderedDict[str, Loaded] = OrderedDict()
        self.latest: dict[int, str] = {}  # adapter id -> name of its newest version
        self.reading: dict[str, Future] = {}
        self.solo: dict[str, ReadAdapter] = {}
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="adapter-reader")
        self._lock = threading.Lock()

    def status(self, ref: AdapterRef) -> str:
        """'ready', 'solo' or 'loading' (a read is started if none runs). Raises ServeError if gone."""
        name = adapter_name(ref)
        if name in self.loaded:
            self.loaded.move_to_end(name)
            return "ready"
        if name in self.solo:
            return "solo"
        future = self.reading.get(name)
        if future is None:
            self.reading[name] = self._pool.submit(read_adapter, ref)
            return "loading"
        if not future.done():
            return "loading"
        del self.reading[name]
        read: ReadAdapter = future.result()  # re-raises ServeError (404) for a gone adapter
        if not read.mixable:
            self.solo[name] = read
            return "solo"
        self._install(name, ref, read)
        return "ready"

    def _install(self, name: str, ref: AdapterRef, read: ReadAdapter) -> None:
        from peft import PeftModel, set_peft_model_state_dict

        config = read.config
        config.inference_mode = True
        config.init_lora_weights = False  # never run an initialisation (PiSSA's would rewrite the base weights)
        model = self.holder.model
        if isinstance(model, PeftModel):
            model.add_adapter(name, config)
        else:
            model = PeftModel(model, config, adapter_name=name)
            self.holder.model = model
        set_peft_model_state_dict(model, read.weights, adapter_name=name)
        model.eval()
        self.loaded[name] = Loaded(name, ref, read.nbytes)
        self.latest[ref.id] = name
        log.info("adapter %s loaded (%.1f MB; %d loaded)", name, read.nbytes / 1e6, len(self.loaded))

    def evict(self, in_use: set[str]) -> None:
        """Remove least recently used adapters over the count or memory budget (never one in use),
        and old versions that nothing uses any more."""
        for name, entry in list(self.loaded.items()):
            if self.latest.get(entry.ref.id) != name and name not in in_use:
                self._remove(name)
        while len(self.loaded) > self.max_adapters or sum(e.nbytes for e in self.loaded.values()) > self.memory_bytes:
            victim = next((name for name in self.loaded if name not in in_use), None)
            if victim is None:
                return
            self._remove(victim)

    def _remove(self, name: str) -> None:
        entry = self.loaded.pop(name)
        if self.latest.get(entry.ref.id) == name:
            del self.latest[entry.ref.id]
        model = self.holder.model
        model.delete_adapter(name)
        if self.loaded:  # PEFT gates the mixed-batch hooks on an active adapter; keep one active
            model.set_adapter(next(reversed(self.loaded)), inference_mode=True)
        log.info("adapter %s evicted (%d loaded)", name, len(self.loaded))

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
