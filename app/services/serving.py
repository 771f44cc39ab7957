"""Serving: which model names a workspace may call on /v1 and what each one is (an approved adapter
on its base model, or a base model alone), and the adapter's model name (slug).

Checked per request: an adapter archived (or sent back to draft) stops being served at the next
request; an answer already streaming finishes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.base_models import get_base_model, list_base_models
from app.config import Settings
from app.domain.serving import adapter_slug
from app.models import Adapter
from app.services.serving_protocol import AdapterRef

SERVED_STATUS = "approved"


class ModelNotFound(LookupError):
    """The model name is unknown, another workspace's, or not approved; worded for the caller."""


@dataclass(frozen=True)
class ServeTarget:
    """What a /v1 request runs on, detached from the database session."""

    model: str  # the name the client called
    base_model: str  # the catalogue key
    base_public_name: str
    adapter: AdapterRef | None
    adapter_id: int | None = None
    request_log: bool = False
    request_log_retention_days: int = 30


def assign_slug(db: Session, adapter: Adapter, number: int | None = None) -> str:
    """Give the adapter its model name once (unique in the workspace), never changing it afterwards.
    The number is the job's id when there is one, so the worker can name it in the model card
    before the adapter row exists."""
    if adapter.slug:
        return adapter.slug
    if adapter.id is None:
        db.flush()
    slug = adapter_slug(adapter.name, number if number is not None else (adapter.job_id or adapter.id))
    taken = db.scalar(
        select(Adapter.id).where(Adapter.workspace_id == adapter.workspace_id, Adapter.slug == slug, Adapter.id != adapter.id)
    )
    if taken is not None:
        slug = f"{slug}-a{adapter.id}"
    adapter.slug = slug
    db.flush()
    return slug


def adapter_version(adapter: Adapter) -> str:
    """Changes when the adapter's files do (the engine reloads on a new version)."""
    raw = f"{adapter.storage_key}|{adapter.size_bytes}|{(adapter.metrics or {}).get('train_loss')}"
    return hashlib.sha1(raw.encode()).hexdigest()[:12]


def resolve_model(db: Session, settings: Settings, workspace_id: int, name: str) -> ServeTarget:
    """The target for a model name: an approved adapter of the workspace by its slug, else an
    installed base model by its catalogue key or public id; ModelNotFound otherwise."""
    name = (name or "").strip()
    if not name:
        raise ModelNotFound("Name a model: an approved adapter's model name or a base model's name (GET /v1/models lists them).")
    adapter = db.scalar(select(Adapter).where(Adapter.workspace_id == workspace_id, Adapter.slug == name))
    if adapter is not None:
        if adapter.status != SERVED_STATUS:
            raise ModelNotFound(
                f"The model '{name}' is not approved for serving (its status is {adapter.status}). Approve it on the adapters page first."
            )
        base = get_base_model(settings, adapter.base_model)
        if base is None or not base.available:
            raise ModelNotFound(f"The base model of '{name}' ({adapter.base_model}) is not installed on this server.")
        return ServeTarget(
            model=name,
            base_model=adapter.base_model,
            base_public_name=base.public_name,
            adapter=AdapterRef(id=adapter.id, storage_key=adapter.storage_key, version=adapter_version(adapter)),
            adapter_id=adapter.id,
            request_log=adapter.request_log_enabled,
            request_log_retention_days=adapter.request_log_retention_days,
        )
    for base in list_base_models(settings):
        if base.available and name in (base.key, base.public_id):
            return ServeTarget(model=name, base_model=base.key, base_public_name=base.public_name, adapter=None)
    raise ModelNotFound(f"The model '{name}' does not exist in your workspace (GET /v1/models lists the models you can call).")


@dataclass(frozen=True)
class ServedModel:
    id: str
    kind: str  # "adapter" | "base"
    base_model: str
    created: int


def served_models(db: Session, settings: Settings, workspace_id: int) -> list[ServedModel]:
    """What the workspace may call: its approved adapters by model name, then the installed base models."""
    adapters = db.scalars(
        select(Adapter)
        .where(Adapter.workspace_id == workspace_id, Adapter.status == SERVED_STATUS, Adapter.slug.is_not(None))
        .order_by(Adapter.id)
    )
    listed = [
        ServedModel(id=a.slug or "", kind="adapter", base_model=a.base_model, created=int(a.created_at.timestamp())) for a in adapters
    ]
    listed += [ServedModel(id=b.key, kind="base", base_model=b.key, created=0) for b in list_base_models(settings) if b.available]
    return listed
