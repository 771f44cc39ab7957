"""Serving in the API: usage per model per day, an adapter's model name and request log, ratings of
the logged answers and the feedback dataset built from them."""

from __future__ import annotations

from typing import Literal

from fastapi import HTTPException, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from app.api.common import api_router
from app.http.deps import CurrentUser, DbSession, OwnedAdapter, Store
from app.http.made_datasets import made_dataset
from app.schemas import DatasetPublic
from app.services import request_log, serving, serving_usage

router = api_router()


@router.get("/usage")
def usage(user: CurrentUser, db: DbSession, days: int = Query(30, ge=1, le=serving_usage.MAX_DAYS)) -> list[dict]:
    """Calls to /v1 per day and model: requests, errors, prompt and completion tokens, p50/p95 latency, p50 time to first token."""
    return serving_usage.usage_summary(db, user.workspace_id, days)


class RequestLogSettings(BaseModel):
    enabled: bool
    retention_days: int = Field(30, ge=1, le=request_log.MAX_RETENTION_DAYS)


@router.get("/adapters/{adapter_id}/serving")
def adapter_serving(adapter: OwnedAdapter, db: DbSession) -> dict:
    """The adapter's model name on /v1, whether it is served now, and its request-log settings."""
    serving.assign_slug(db, adapter)
    return {
        "model": adapter.slug,
        "served": adapter.status == serving.SERVED_STATUS,
        "request_log": {"enabled": adapter.request_log_enabled, "retention_days": adapter.request_log_retention_days},
    }


@router.put("/adapters/{adapter_id}/request-log")
def set_request_log(body: RequestLogSettings, adapter: OwnedAdapter, db: DbSession) -> dict:
    try:
        request_log.configure(db, adapter, body.enabled, body.retention_days)
    except request_log.RequestLogError as exc:
        raise HTTPException(422, str(exc)) from None
    return {"enabled": adapter.request_log_enabled, "retention_days": adapter.request_log_retention_days}


@router.get("/adapters/{adapter_id}/request-log")
def list_request_log(
    adapter: OwnedAdapter, db: DbSession, limit: int = Query(50, ge=1, le=500), offset: int = Query(0, ge=0)
) -> list[dict]:
    return [
        {"id": e.id, "prompt": e.prompt, "answer": e.answer, "created_at": e.created_at.isoformat(), "rating": request_log.rating_name(e)}
        for e in request_log.entries(db, adapter, limit, offset)
    ]


@router.get("/adapters/{adapter_id}/request-log.csv", response_class=Response, responses={200: {"content": {"text/csv": {}}}})
def request_log_csv(adapter: OwnedAdapter, db: DbSession):
    """The log as CSV (prompt, answer), ready to upload back as a dataset."""
    return Response(request_log.export_csv(db, adapter), media_type="text/csv; charset=utf-8")


class LogRating(BaseModel):
    rating: Literal["good", "bad", "none"] = Field(description="Thumbs up (good), down (bad), or none to take the rating back.")


@router.put("/adapters/{adapter_id}/request-log/{entry_id}/rating", responses={404: {}})
def rate_log_entry(body: LogRating, adapter: OwnedAdapter, user: CurrentUser, db: DbSession, entry_id: int) -> dict:
    entry = request_log.entry_of(db, adapter, entry_id)
    if entry is None:
        raise HTTPException(404, "There is no such request-log entry in your workspace.")
    request_log.rate(db, entry, body.rating, user.id)
    return {"id": entry.id, "rating": request_log.rating_name(entry)}


@router.get("/adapters/{adapter_id}/feedback-dataset")
def feedback_counts(adapter: OwnedAdapter, db: DbSession) -> dict[str, int]:
    """How many logged answers are rated good and bad, and how many rows a feedback dataset from them gets."""
    return request_log.rated_counts(db, adapter)


@router.post("/adapters/{adapter_id}/feedback-dataset", status_code=201, responses={404: {}, 409: {}})
def feedback_dataset(request: Request, adapter: OwnedAdapter, user: CurrentUser, db: DbSession, store: Store) -> DatasetPublic:
    """A feedback dataset (prompt, answer, feedback good/bad) from the rated request-log entries, for KTO (task `feedback`)."""
    build = lambda: request_log.feedback_dataset(db, store, adapter, user.id)  # noqa: E731
    return DatasetPublic.model_validate(made_dataset(request, db, user, build, "request_log", adapter_id=adapter.id))
