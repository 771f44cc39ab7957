"""Responses pages and the API both give: redirects that suit htmx, and the adapter's files
(the zip, the merged model, the GGUF adapter) with their downloads recorded by the caller."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import HTTPException, Request
from fastapi.responses import FileResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from app.models import Adapter, User
from app.services import adapters, exports
from app.services.artifacts import ArtifactStore


def is_htmx(request: Request) -> bool:
    return request.headers.get("HX-Request") == "true"


def redirect(request: Request, url: str) -> Response:
    """A redirect that works for plain form posts (303) and htmx requests (HX-Redirect)."""
    if is_htmx(request):
        return Response(status_code=204, headers={"HX-Redirect": url})
    return RedirectResponse(url, status_code=303)


def adapter_zip_response(adapter: Adapter, store: ArtifactStore) -> Response:
    path = adapters.adapter_zip_path(store, adapter)
    if not path.is_file():
        raise HTTPException(404, "This adapter's files are missing from the artifact store.")
    name = adapters.download_filename(adapter)
    return FileResponse(
        path,
        media_type="application/zip",
        filename=name,
        headers={"Content-Disposition": f"attachment; filename=\"{name}\"; filename*=UTF-8''{quote(name)}"},
    )


# kind -> (store key, media type, download name, what to ask for while it is missing)
EXPORT_FILES = {
    "merged": (exports.merged_key, "application/zip", "tailor-merged-{id}.zip", "The merged model"),
    "gguf": (exports.gguf_key, "application/octet-stream", "tailor-adapter-{id}.gguf", "The GGUF adapter"),
}


def export_file_response(db: Session, adapter: Adapter, user: User, store: ArtifactStore, kind: str) -> FileResponse:
    """An exported file of the adapter, its download recorded; 404 until the export is built."""
    key_of, media_type, filename, what = EXPORT_FILES[kind]
    key = key_of(adapter.id)
    if not store.exists(key):
        raise HTTPException(404, f"{what} has not been exported yet. Ask for it from the adapter list.")
    adapters.record_download(db, adapter, user.id)
    return FileResponse(store.path(key), media_type=media_type, filename=filename.format(id=adapter.id))
