"""Packaging a trained adapter: model card beside the adapter files, then one zip. No torch."""

from __future__ import annotations

import zipfile
from pathlib import Path

from worker.training.model_card import render_model_card

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
FULL_MODEL_FILES = ("config.json",)  # a full fine-tune: the whole model (weights may be sharded)


def write_adapter_package(adapter_dir: Path, zip_path: Path, card_info: dict) -> int:
    """Write README.md into adapter_dir and zip the folder to zip_path; returns the zip's size.
    Refuses anything but safetensors weights, so a pickle never ships."""
    missing = [name for name in ADAPTER_FILES if not (adapter_dir / name).is_file()]
    if missing and all((adapter_dir / name).is_file() for name in FULL_MODEL_FILES) and any(adapter_dir.glob("*.safetensors")):
        missing = []
    if missing:
        raise FileNotFoundError(f"The adapter is incomplete: {', '.join(missing)} missing.")
    (adapter_dir / "README.md").write_text(render_model_card(card_info), encoding="utf-8")
    tmp = zip_path.with_suffix(".zip.part")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(adapter_dir.rglob("*")):
            if path.is_file() and path.suffix not in (".bin", ".pt", ".pth", ".pkl"):
                archive.write(path, path.relative_to(adapter_dir).as_posix())
    tmp.replace(zip_path)
    return zip_path.stat().st_size
