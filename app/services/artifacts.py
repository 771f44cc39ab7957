"""The artifact store: datasets, adapters and reports under keys like 'datasets/3/rows.csv'.

Local directory for now; an S3-compatible store will implement the same methods. Writes go to a
temporary name and are renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path


class ArtifactKeyError(ValueError):
    """A key that would leave the store's root."""


class LocalArtifactStore:
    def __init__(self, root: Path):
        self.root = Path(root).resolve()

    def path(self, key: str) -> Path:
        """The local path of a key, refusing any key that escapes the root."""
        candidate = (self.root / key).resolve()
        if candidate != self.root and self.root not in candidate.parents:
            raise ArtifactKeyError(f"Artifact key {key!r} is outside the store.")
        return candidate

    def temp_path(self, suffix: str = "") -> Path:
        """A fresh temporary path inside the store (same filesystem, so rename is atomic)."""
        tmp = self.root / ".tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        return tmp / f"{uuid.uuid4().hex}{suffix}"

    def put_file(self, key: str, source: Path) -> Path:
        """Move a finished local file or folder into place under key."""
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            self.delete(key)
        os.replace(source, target)
        return target

    def exists(self, key: str) -> bool:
        return self.path(key).exists()

    def delete(self, key: str) -> None:
        target = self.path(key)
        if target.is_dir():
            shutil.rmtree(target, ignore_errors=True)
        elif target.exists():
            target.unlink()


def get_artifact_store() -> LocalArtifactStore:
    from app.config import get_settings

    return LocalArtifactStore(get_settings().artifacts_dir)
