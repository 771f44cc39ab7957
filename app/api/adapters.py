"""Adapters in the API: list, read, download, exports."""

from __future__ import annotations

from fastapi import HTTPException, Request
from fastapi.responses import Response

from app.api.common import api_router
from app.config import get_settings
from app.http import auditing
from app.http.deps import CurrentUser, DbSession, OwnedAdapter, Store
from app.http.responses import adapter_zip_response, export_file_response
from app.models import Adapter, User
from app.schemas import AdapterDownloadPublic, AdapterPublic, AdapterUpdate, GgufExportRequested, MergedExportRequested
from app.services import adapters, exports

router = api_router()


def adapter_public(adapter: Adapter) -> AdapterPublic:
    return AdapterPublic.model_validate(adapter).model_copy(update={"download_url": f"/api/v1/adapters/{adapter.id}/download"})


@router.get("/adapters", response_model=list[AdapterPublic])
def list_adapters(user: CurrentUser, db: DbSession):
    return [adapter_public(a) for a in adapters.adapters_for(db, user.workspace_id)]


@router.get("/adapters/{adapter_id}", response_model=AdapterPublic)
def get_adapter(adapter: OwnedAdapter):
    return adapter_public(adapter)


@router.get("/adapters/{adapter_id}/download", response_class=Response, responses={200: {"content": {"application/zip": {}}}})
def download_adapter(request: Request, adapter: OwnedAdapter, user: CurrentUser, db: DbSession, store: Store):
    """The adapter as a zip: adapter_config.json, adapter_model.safetensors and a README model card. Recorded (who, when)."""
    response = adapter_zip_response(adapter, store)
    adapters.record_download(db, adapter, user.id)
    auditing.record(request, db, user, "adapter_downloaded", ("adapter", adapter.id), {"file": "zip"})
    return response


@router.patch("/adapters/{adapter_id}", response_model=AdapterPublic)
def update_adapter(request: Request, body: AdapterUpdate, adapter: OwnedAdapter, user: CurrentUser, db: DbSession):
    try:
        adapters.set_status(db, adapter, body.status)
    except adapters.AdapterError as exc:
        raise HTTPException(422, str(exc)) from None
    auditing.record(request, db, user, "adapter_status_changed", ("adapter", adapter.id), {"status": body.status})
    return adapter_public(adapter)


@router.get("/adapters/{adapter_id}/downloads")
def list_downloads(adapter: OwnedAdapter, db: DbSession) -> list[AdapterDownloadPublic]:
    """Every download of this adapter: who and when."""
    emails: dict[int | None, str | None] = {}
    out = []
    for d in adapters.downloads_of(db, adapter.id):
        if d.user_id not in emails:
            row = db.get(User, d.user_id) if d.user_id else None
            emails[d.user_id] = row.email if row else None
        out.append(AdapterDownloadPublic(user=emails[d.user_id], at=d.created_at.isoformat()))
    return out


@router.post("/adapters/{adapter_id}/export", status_code=202)
def export_merged(request: Request, adapter: OwnedAdapter, user: CurrentUser, db: DbSession) -> MergedExportRequested:
    """Build a merged full model (LoRA family) in the background; download it from /adapters/{id}/merged."""
    try:
        exports.request_merged_export(db, adapter)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    auditing.record(request, db, user, "export_requested", ("adapter", adapter.id), {"file": "merged"})
    return MergedExportRequested(adapter_id=adapter.id, merged_export_state=adapter.merged_export_state)


@router.get("/adapters/{adapter_id}/merged", response_class=Response, responses={200: {"content": {"application/zip": {}}}})
def download_merged(request: Request, adapter: OwnedAdapter, user: CurrentUser, db: DbSession, store: Store):
    response = export_file_response(db, adapter, user, store, "merged")
    auditing.record(request, db, user, "adapter_downloaded", ("adapter", adapter.id), {"file": "merged"})
    return response


@router.post("/adapters/{adapter_id}/export-gguf", status_code=202)
def export_gguf(request: Request, adapter: OwnedAdapter, user: CurrentUser, db: DbSession) -> GgufExportRequested:
    """Write the adapter as a llama.cpp LoRA (GGUF) in the background; download it from /adapters/{id}/gguf.
    Plain LoRA adapters (LoRA, QLoRA, rsLoRA, PiSSA) on Llama-architecture bases only; 422 says why otherwise."""
    try:
        exports.request_gguf_export(db, get_settings(), adapter)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    auditing.record(request, db, user, "export_requested", ("adapter", adapter.id), {"file": "gguf"})
    return GgufExportRequested(adapter_id=adapter.id, gguf_export_state=adapter.gguf_export_state)


@router.get("/adapters/{adapter_id}/gguf", response_class=Response, responses={200: {"content": {"application/octet-stream": {}}}})
def download_gguf(request: Request, adapter: OwnedAdapter, user: CurrentUser, db: DbSession, store: Store):
    """The llama.cpp adapter: `llama-cli -m base.gguf --lora this.gguf`. Recorded (who, when)."""
    response = export_file_response(db, adapter, user, store, "gguf")
    auditing.record(request, db, user, "adapter_downloaded", ("adapter", adapter.id), {"file": "gguf"})
    return response
