"""The base-model catalogue: models a job can start from.

An entry points at a local folder (a Hugging Face save), a GGUF file, or a Hugging Face id for
machines that can reach the hub. Every folder under DATA_DIR/models holding a config.json is also
offered, so an air-gapped business imports a model by copying its folder there
(or `tailor import-model`).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from app.config import Settings

DEMO_MODEL_KEY = "smollm2-135m-instruct"


@dataclass(frozen=True)
class BaseModel:
    key: str
    label: str
    source: str  # "folder" | "gguf" | "hub"
    location: str  # folder path, GGUF path or hub id
    parameters: str = ""
    description: str = ""
    # The model's public id (a Hugging Face hub id) where it has one: what a downloaded adapter names as
    # its base, never the folder on this server. A local folder gives it in tailor.json's "public_id".
    public_id: str = ""

    @property
    def public_name(self) -> str:
        """The name the base model travels under: its public id, else its catalogue key."""
        return self.public_id or self.key

    @property
    def available(self) -> bool:
        if self.source == "folder":
            return (Path(self.location) / "config.json").is_file()
        if self.source == "gguf":
            return Path(self.location).is_file()
        return True


def _folder_meta(folder: Path) -> dict:
    meta = folder / "tailor.json"
    if meta.is_file():
        try:
            loaded = json.loads(meta.read_text())
            return loaded if isinstance(loaded, dict) else {}
        except (OSError, ValueError):
            pass
    return {}


def _folder_label(folder: Path) -> str:
    return str(_folder_meta(folder).get("label") or folder.name)


def list_base_models(settings: Settings) -> list[BaseModel]:
    """Built-in entries plus every model folder found in DATA_DIR/models, available ones first."""
    models_dir = settings.models_dir
    entries: dict[str, BaseModel] = {
        DEMO_MODEL_KEY: BaseModel(
            key=DEMO_MODEL_KEY,
            label="SmolLM2 135M Instruct (demo)",
            source="folder",
            location=str((models_dir / DEMO_MODEL_KEY).resolve()),
            parameters="135M",
            description="A small real chat model (Apache-2.0) that trains on a CPU in minutes. Provisioned by `tailor provision-demo`.",
            public_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        )
    }
    if models_dir.is_dir():
        for folder in sorted(models_dir.iterdir()):
            if folder.name not in entries and (folder / "config.json").is_file():
                entries[folder.name] = BaseModel(
                    key=folder.name,
                    label=_folder_label(folder),
                    source="folder",
                    location=str(folder.resolve()),
                    public_id=str(_folder_meta(folder).get("public_id") or ""),
                )
    return sorted(entries.values(), key=lambda m: (not m.available, m.label.lower()))


def get_base_model(settings: Settings, key: str) -> BaseModel | None:
    return next((m for m in list_base_models(settings) if m.key == key), None)


FINGERPRINT_FILE = ".tailor-fingerprint.json"
# What makes a model folder behave as it does: its config, tokenizer and weights (not notes or our own files).
_FINGERPRINTED_NAMES = {
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "vocab.txt",
    "chat_template.jinja",
}


def _fingerprinted_files(location: Path) -> list[Path]:
    if location.is_file():
        return [location]
    return sorted(
        p for p in location.iterdir() if p.is_file() and (p.name in _FINGERPRINTED_NAMES or p.suffix in (".safetensors", ".gguf"))
    )


def model_fingerprint(location: str | os.PathLike) -> str:
    """'sha256:<hex>' over a local model's config, tokenizer and weight files (names and bytes): the
    revision of a model that has no hub commit. Cached beside the files, keyed by their sizes and
    modification times, so the weights are read once."""
    location = Path(location)
    files = _fingerprinted_files(location)
    stamp = [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files]
    cache = (location.parent / f".{location.name}{FINGERPRINT_FILE}") if location.is_file() else location / FINGERPRINT_FILE
    try:
        cached = json.loads(cache.read_text())
        if cached.get("files") == stamp:
            return cached["fingerprint"]
    except (OSError, ValueError, AttributeError):
        pass
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
    fingerprint = f"sha256:{digest.hexdigest()}"
    try:  # a read-only models folder is fine: the fingerprint is then computed each time
        tmp = cache.with_name(cache.name + ".part")
        tmp.write_text(json.dumps({"files": stamp, "fingerprint": fingerprint}))
        tmp.replace(cache)
    except OSError:
        pass
    return fingerprint


def base_model_provenance(model: BaseModel) -> dict[str, str]:
    """{"revision", "source"} for the model card and the adapter: a hub id's name, or for a local
    folder or GGUF file its content fingerprint and where it came from (tailor.json's "source")."""
    if model.source == "hub":
        return {"revision": "not pinned (the hub's latest when trained)", "source": f"Hugging Face hub: {model.location}"}
    location = Path(model.location)
    source = f"local {'GGUF file' if model.source == 'gguf' else 'folder'} {location.name}"
    meta = location / "tailor.json"
    if meta.is_file():
        try:
            source = json.loads(meta.read_text()).get("source") or source
        except (OSError, ValueError):
            pass
    return {"revision": model_fingerprint(location), "source": source}
