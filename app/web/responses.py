"""Response helpers shared by pages and the API."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import HTTPException, Request
from fastapi.responses import FileResponse, RedirectResponse, Response

from app.models import Adapter
from app.services import adapters
from app.services.artifacts import LocalArtifactStore


def is_htmx(request: Request) -> bool:
    return request.headers.get("HX-Request") == "true"


def redirect(request: Request, url: str) -> Response:
    """A redirect that works for plain form posts (303) and htmx requests (HX-Redirect)."""
    if is_htmx(request):
        return Response(status_code=204, headers={"HX-Redirect": url})
    return RedirectResponse(url, status_code=303)


def adapter_zip_response(adapter: Adapter, store: LocalArtifactStore) -> Response:
    path = adapters.adapter_zip_path(store, adapter)
    if not path.is_file():
        raise HTTPException(404, "This adapter's files are missing from the artifact store.")
    name = adapters.download_filename(adapter)
    return FileResponse(path, media_type="application/zip", filename=name,
                        headers={"Content-Disposition": f"attachment; filename=\"{name}\"; filename*=UTF-8''{quote(name)}"})
