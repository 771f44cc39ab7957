"""Adapter pages: the list and downloads."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import FileResponse
from sqlalchemy.orm import Session

from app.config import get_settings
from app.models import Adapter, User
from app.services import adapters, exports
from app.services.artifacts import LocalArtifactStore
from app.web.deps import current_user, get_db, owned_adapter, store_dep, verify_csrf
from app.web.responses import adapter_zip_response, redirect
from app.web.templating import render

router = APIRouter(dependencies=[Depends(verify_csrf)])


@router.get("/adapters")
def adapters_page(request: Request, archived: bool = False, user: User = Depends(current_user), db: Session = Depends(get_db)):
    listed = adapters.adapters_for(db, user.workspace_id, include_archived=archived)
    reasons = gguf_reasons(listed)
    notes: dict[str, list[str]] = {}  # one line per reason, naming its adapters
    for a in listed:
        if a.id in reasons:
            notes.setdefault(reasons[a.id], []).append(a.name)
    return render(request, "adapters.html", {"adapters": listed,
                                             "downloads": adapters.download_counts(db, user.workspace_id), "show_archived": archived,
                                             "statuses": adapters.STATUSES, "mergeable": exports.MERGEABLE_TECHNIQUES,
                                             "gguf_reasons": reasons, "gguf_notes": notes})


def gguf_reasons(listed: list[Adapter]) -> dict[int, str]:
    """Why no llama.cpp (GGUF) export is offered, for each adapter that gets none."""
    reasons = {a.id: exports.gguf_unavailable_reason(get_settings(), a) for a in listed}
    return {k: v for k, v in reasons.items() if v}


@router.get("/adapters/{adapter_id}/download")
def download_adapter(adapter: Adapter = Depends(owned_adapter), user: User = Depends(current_user), db: Session = Depends(get_db),
                     store: LocalArtifactStore = Depends(store_dep)):
    response = adapter_zip_response(adapter, store)
    adapters.record_download(db, adapter, user.id)
    return response


@router.post("/adapters/{adapter_id}/status")
def change_status(request: Request, status: str = Form(""), adapter: Adapter = Depends(owned_adapter), db: Session = Depends(get_db)):
    try:
        adapters.set_status(db, adapter, status)
    except adapters.AdapterError as exc:
        raise HTTPException(422, str(exc)) from None
    return redirect(request, "/adapters")


@router.post("/adapters/{adapter_id}/export")
def export_merged(request: Request, adapter: Adapter = Depends(owned_adapter), db: Session = Depends(get_db)):
    try:
        exports.request_merged_export(db, adapter)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    return redirect(request, "/adapters")


@router.get("/adapters/{adapter_id}/merged")
def download_merged(adapter: Adapter = Depends(owned_adapter), user: User = Depends(current_user), db: Session = Depends(get_db),
                    store: LocalArtifactStore = Depends(store_dep)):
    return export_file_response(db, adapter, user, store, "merged")


# kind -> (store key, media type, download name, what to ask for while it is missing)
EXPORT_FILES = {
    "merged": (exports.merged_key, "application/zip", "tailor-merged-{id}.zip", "The merged model"),
    "gguf": (exports.gguf_key, "application/octet-stream", "tailor-adapter-{id}.gguf", "The GGUF adapter"),
}


def export_file_response(db: Session, adapter: Adapter, user: User, store, kind: str) -> FileResponse:
    """An exported file of the adapter, its download recorded; 404 until the export is built."""
    key_of, media_type, filename, what = EXPORT_FILES[kind]
    key = key_of(adapter.id)
    if not store.exists(key):
        raise HTTPException(404, f"{what} has not been exported yet. Ask for it from the adapter list.")
    adapters.record_download(db, adapter, user.id)
    return FileResponse(store.path(key), media_type=media_type, filename=filename.format(id=adapter.id))


@router.post("/adapters/{adapter_id}/export-gguf")
def export_gguf(request: Request, adapter: Adapter = Depends(owned_adapter), db: Session = Depends(get_db)):
    try:
        exports.request_gguf_export(db, get_settings(), adapter)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    return redirect(request, "/adapters")


@router.get("/adapters/{adapter_id}/gguf")
def download_gguf(adapter: Adapter = Depends(owned_adapter), user: User = Depends(current_user), db: Session = Depends(get_db),
                  store: LocalArtifactStore = Depends(store_dep)):
    return export_file_response(db, adapter, user, store, "gguf")
