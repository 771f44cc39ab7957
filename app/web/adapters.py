"""Adapter pages: the list and downloads."""

from __future__ import annotations

from fastapi import APIRouter, Form, HTTPException, Request

from app.config import get_settings
from app.http import auditing
from app.http.deps import Csrf, CurrentUser, DbSession, OwnedAdapter, Store
from app.http.responses import adapter_zip_response, export_file_response, redirect
from app.models import Adapter
from app.services import adapters, exports
from app.web.templating import render

router = APIRouter(dependencies=[Csrf])


@router.get("/adapters")
def adapters_page(request: Request, user: CurrentUser, db: DbSession, archived: bool = False):
    listed = adapters.adapters_for(db, user.workspace_id, include_archived=archived)
    reasons = gguf_reasons(listed)
    notes: dict[str, list[str]] = {}  # one line per reason, naming its adapters
    for a in listed:
        if a.id in reasons:
            notes.setdefault(reasons[a.id], []).append(a.name)
    return render(
        request,
        "adapters.html",
        {
            "adapters": listed,
            "downloads": adapters.download_counts(db, user.workspace_id),
            "show_archived": archived,
            "statuses": adapters.STATUSES,
            "mergeable": exports.MERGEABLE_TECHNIQUES,
            "gguf_reasons": reasons,
            "gguf_notes": notes,
        },
    )


def gguf_reasons(listed: list[Adapter]) -> dict[int, str]:
    """Why no llama.cpp (GGUF) export is offered, for each adapter that gets none."""
    return exports.gguf_unavailable_reasons(get_settings(), listed)


@router.get("/adapters/{adapter_id}/download")
def download_adapter(request: Request, adapter: OwnedAdapter, user: CurrentUser, db: DbSession, store: Store):
    response = adapter_zip_response(adapter, store)
    adapters.record_download(db, adapter, user.id)
    auditing.record(request, db, user, "adapter_downloaded", ("adapter", adapter.id), {"file": "zip"})
    return response


@router.post("/adapters/{adapter_id}/status")
def change_status(request: Request, adapter: OwnedAdapter, user: CurrentUser, db: DbSession, status: str = Form("")):
    try:
        adapters.set_status(db, adapter, status)
    except adapters.AdapterError as exc:
        raise HTTPException(422, str(exc)) from None
    auditing.record(request, db, user, "adapter_status_changed", ("adapter", adapter.id), {"status": status})
    return redirect(request, "/adapters")


@router.post("/adapters/{adapter_id}/export")
def export_merged(request: Request, adapter: OwnedAdapter, user: CurrentUser, db: DbSession):
    try:
        exports.request_merged_export(db, adapter)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    auditing.record(request, db, user, "export_requested", ("adapter", adapter.id), {"file": "merged"})
    return redirect(request, "/adapters")


@router.get("/adapters/{adapter_id}/merged")
def download_merged(request: Request, adapter: OwnedAdapter, user: CurrentUser, db: DbSession, store: Store):
    response = export_file_response(db, adapter, user, store, "merged")
    auditing.record(request, db, user, "adapter_downloaded", ("adapter", adapter.id), {"file": "merged"})
    return response


@router.post("/adapters/{adapter_id}/export-gguf")
def export_gguf(request: Request, adapter: OwnedAdapter, user: CurrentUser, db: DbSession):
    try:
        exports.request_gguf_export(db, get_settings(), adapter)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    auditing.record(request, db, user, "export_requested", ("adapter", adapter.id), {"file": "gguf"})
    return redirect(request, "/adapters")


@router.get("/adapters/{adapter_id}/gguf")
def download_gguf(request: Request, adapter: OwnedAdapter, user: CurrentUser, db: DbSession, store: Store):
    response = export_file_response(db, adapter, user, store, "gguf")
    auditing.record(request, db, user, "adapter_downloaded", ("adapter", adapter.id), {"file": "gguf"})
    return response
