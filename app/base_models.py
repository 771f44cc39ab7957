"""The base-model catalogue: models a job can start from.

An entry points at a local folder (a Hugging Face save), a GGUF file, or a Hugging Face id for
machines that can reach the hub. Every folder under DATA_DIR/models holding a config.json is also
offered, so an air-gapped business imports a model by copying its folder there
(or `tailor import-model`).
"""

from __future__ import annotations

import json
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

    @property
    def available(self) -> bool:
        if self.source == "folder":
            return (Path(self.location) / "config.json").is_file()
        if self.source == "gguf":
            return Path(self.location).is_file()
        return True


def _folder_label(folder: Path) -> str:
    meta = folder / "tailor.json"
    if meta.is_file():
        try:
            return json.loads(meta.read_text()).get("label") or folder.name
        except (OSError, ValueError):
            pass
    return folder.name


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
        )
    }
    if models_dir.is_dir():
        for folder in sorted(models_dir.iterdir()):
            if folder.name not in entries and (folder / "config.json").is_file():
                entries[folder.name] = BaseModel(key=folder.name, label=_folder_label(folder), source="folder", location=str(folder.resolve()))
    return sorted(entries.values(), key=lambda m: (not m.available, m.label.lower()))


def get_base_model(settings: Settings, key: str) -> BaseModel | None:
    return next((m for m in list_base_models(settings) if m.key == key), None)
