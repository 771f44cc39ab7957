"""The artifact store: datasets, adapters and reports under keys like 'datasets/3/rows.csv'.

Two implementations behind one interface:
- `LocalArtifactStore`: a directory (the default; web and workers on one machine or a shared disk);
- `S3ArtifactStore`: an S3-compatible bucket, for web and workers on different machines. Objects
  are immutable once written, so each process keeps a local cache and fetches a key on first read.

Readers ask `path(key)` for a local path; writers build a file or folder under `temp_path()` and
publish it with `put_file(key, path)`. Nothing is ever visible half-written: local publishes are
renames, and an S3 object appears only when its upload completes.

Training checkpoints are the one thing rewritten in place: the worker writes them at `path(key)`,
`mirror(key)` makes the new version durable in the store (a no-op for a local directory, an
upload for a bucket), and the next attempt, maybe on another machine, reads `refresh(key)`.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Protocol


class ArtifactKeyError(ValueError):
    """A key that would leave the store's root."""


class ArtifactStore(Protocol):
    def path(self, key: str) -> Path: ...
    def temp_path(self, suffix: str = "") -> Path: ...
    def put_file(self, key: str, source: Path) -> Path: ...
    def exists(self, key: str) -> bool: ...
    def delete(self, key: str) -> None: ...
    def mirror(self, key: str) -> None: ...
    def refresh(self, key: str) -> Path: ...


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

    def mirror(self, key: str) -> None:
        """Nothing to do: a file written at path(key) already is in the store."""
        self.path(key)

    def refresh(self, key: str) -> Path:
        return self.path(key)


class S3ArtifactStore:
    """Keys are objects under `prefix` in `bucket`; a folder key is the objects below 'key/'."""

    def __init__(self, bucket: str, prefix: str, cache_dir: Path, client):
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.cache = LocalArtifactStore(cache_dir)
        self.client = client

    def _object_key(self, key: str) -> str:
        self.cache.path(key)  # the same confinement rules as the local store
        return f"{self.prefix}/{key}" if self.prefix else key

    def _remote_objects(self, key: str) -> list[str]:
        """The object itself, or every object of the folder `key`."""
        base = self._object_key(key)
        found: list[str] = []
        for prefix in (base, base.rstrip("/") + "/"):
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    name = item["Key"]
                    if (name == base or name.startswith(base.rstrip("/") + "/")) and name not in found:
                        found.append(name)
            if found:
                break
        return found

    def path(self, key: str) -> Path:
        """A local copy of the key, downloaded on first use (objects never change once written)."""
        local = self.cache.path(key)
        if local.exists():
            return local
        base = self._object_key(key)
        for name in self._remote_objects(key):
            target = local if name == base else local / name[len(base) :].lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(f".{target.name}.{uuid.uuid4().hex}.part")
            self.client.download_file(self.bucket, name, str(partial))
            os.replace(partial, target)
        return local

    def temp_path(self, suffix: str = "") -> Path:
        return self.cache.temp_path(suffix)

    def put_file(self, key: str, source: Path) -> Path:
        """Upload a finished file or folder, then keep it as this process's cached copy."""
        self.delete(key)
        base = self._object_key(key)
        files = [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())
        for file in files:
            name = base if file == source else f"{base}/{file.relative_to(source).as_posix()}"
            self.client.upload_file(str(file), self.bucket, name)
        return self.cache.put_file(key, source)

    def exists(self, key: str) -> bool:
        return self.cache.exists(key) or bool(self._remote_objects(key))

    def mirror(self, key: str) -> None:
        """Upload the files now at path(key) over their objects (each replaced atomically), and
        drop objects of files that are gone, so another machine's refresh(key) sees this state."""
        local = self.cache.path(key)
        base = self._object_key(key)
        files = [local] if local.is_file() else sorted(p for p in local.rglob("*") if p.is_file() and not p.name.startswith("."))
        names = {base if f == local else f"{base}/{f.relative_to(local).as_posix()}": f for f in files}
        for name, file in names.items():
            self.client.upload_file(str(file), self.bucket, name)
        stale = [n for n in self._remote_objects(key) if n not in names]
        if stale:
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": [{"Key": n} for n in stale]})

    def refresh(self, key: str) -> Path:
        """The bucket's current version of a key that is rewritten in place (checkpoints): the
        local cache may hold an older one from an earlier attempt on this machine."""
        self.cache.delete(key)
        return self.path(key)

    def delete(self, key: str) -> None:
        names = self._remote_objects(key)
        for start in range(0, len(names), 1000):
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": [{"Key": n} for n in names[start : start + 1000]]})
        self.cache.delete(key)


def make_artifact_store(settings) -> LocalArtifactStore | S3ArtifactStore:
    """The store the settings ask for: TAILOR_ARTIFACT_STORE_URL=s3://bucket/prefix, or the data dir."""
    url = settings.artifact_store_url
    if not url:
        return LocalArtifactStore(settings.artifacts_dir)
    if not url.startswith("s3://"):
        raise ValueError(f"TAILOR_ARTIFACT_STORE_URL must start with s3:// (got {url!r}).")
    import boto3  # only deployments with a bucket need it: pip install 'tailor[s3]'

    bucket, _, prefix = url[len("s3://") :].partition("/")
    client = boto3.client("s3", endpoint_url=settings.s3_endpoint_url or None)
    return S3ArtifactStore(bucket, prefix, settings.data_dir / "artifact-cache", client)


_STORE_CACHE: dict[tuple, LocalArtifactStore | S3ArtifactStore] = {}


def get_artifact_store() -> LocalArtifactStore | S3ArtifactStore:
    from app.config import get_settings

    settings = get_settings()
    marker = (settings.artifact_store_url, settings.s3_endpoint_url, str(settings.data_dir))
    if marker not in _STORE_CACHE:
        _STORE_CACHE[marker] = make_artifact_store(settings)
    return _STORE_CACHE[marker]
