"""Serving pages: an adapter's page (the Use it panel and its request log, whose answers reviewers
rate and turn into a feedback dataset) and the usage page."""

from __future__ import annotations

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import Response

from app.config import get_settings
from app.domain.serving import usage_snippets
from app.http.deps import Csrf, CurrentUser, DbSession, OwnedAdapter, Store
from app.http.made_datasets import made_dataset
from app.http.responses import is_htmx, redirect
from app.services import request_log, serving, serving_usage
from app.web.templating import render

router = APIRouter(dependencies=[Csrf])
LOG_PAGE = 50


def endpoint_url(request: Request) -> str:
    """The /v1 base URL clients use: TAILOR_SERVE_PUBLIC_URL, else this request's own host."""
    configured = get_settings().serve_public_url
    return configured.rstrip("/") if configured else str(request.base_url).rstrip("/") + "/v1"


@router.get("/adapters/{adapter_id}")
def adapter_page(request: Request, adapter: OwnedAdapter, db: DbSession, page: int = 0):
    serving.assign_slug(db, adapter)  # an adapter from before serving existed gets its name on first view
    page = max(0, page)
    return render(
        request,
        "adapter_detail.html",
        {
            "adapter": adapter,
            "base_url": endpoint_url(request),
            "snippets": usage_snippets(endpoint_url(request), adapter.slug or ""),
            "served": adapter.status == serving.SERVED_STATUS,
            "log_entries": request_log.entries(db, adapter, LOG_PAGE, page * LOG_PAGE),
            "log_count": request_log.count(db, adapter),
            "rated": request_log.rated_counts(db, adapter),
            "page": page,
            "page_size": LOG_PAGE,
        },
    )


@router.post("/adapters/{adapter_id}/request-log")
def configure_request_log(
    request: Request, adapter: OwnedAdapter, db: DbSession, enabled: str | None = Form(None), retention_days: str = Form("30")
):
    try:
        request_log.configure(db, adapter, enabled is not None, retention_days)
    except request_log.RequestLogError as exc:
        raise HTTPException(422, str(exc)) from None
    return redirect(request, f"/adapters/{adapter.id}")


@router.get("/adapters/{adapter_id}/request-log.csv")
def request_log_csv(adapter: OwnedAdapter, db: DbSession):
    return Response(
        request_log.export_csv(db, adapter),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="request-log-{adapter.slug or adapter.id}.csv"'},
    )


@router.post("/adapters/{adapter_id}/request-log/{entry_id}/rating")
def rate_log_entry(request: Request, adapter: OwnedAdapter, user: CurrentUser, db: DbSession, entry_id: int, rating: str = Form("")):
    entry = request_log.entry_of(db, adapter, entry_id)
    if entry is None:
        raise HTTPException(404, "There is no such request-log entry in your workspace.")
    try:
        request_log.rate(db, entry, rating, user.id)
    except request_log.RequestLogError as exc:
        raise HTTPException(422, str(exc)) from None
    if is_htmx(request):
        return render(request, "_request_log_row.html", {"adapter": adapter, "e": entry})
    return redirect(request, f"/adapters/{adapter.id}#request-log")


@router.post("/adapters/{adapter_id}/feedback-dataset")
def feedback_dataset(request: Request, adapter: OwnedAdapter, user: CurrentUser, db: DbSession, store: Store):
    build = lambda: request_log.feedback_dataset(db, store, adapter, user.id)  # noqa: E731
    dataset = made_dataset(request, db, user, build, "request_log", adapter_id=adapter.id)
    return redirect(request, f"/datasets/{dataset.id}?task=feedback")


@router.get("/usage")
def usage_page(request: Request, user: CurrentUser, db: DbSession, days: int = 30):
    days = max(1, min(days, serving_usage.MAX_DAYS))
    return render(request, "usage.html", {"rows": serving_usage.usage_summary(db, user.workspace_id, days), "days": days})
