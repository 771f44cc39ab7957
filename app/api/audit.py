"""The audit log in the API (owners: their workspace; administrators: all). Read-only; the CSV
export is GET /settings/audit.csv (same filters, Bearer tokens work there too)."""

from __future__ import annotations

from datetime import date

from fastapi import HTTPException, Query

from app.api.common import api_router
from app.http.deps import AppSettings, CurrentUser, DbSession
from app.schemas_people import AuditEventPublic, AuditPagePublic
from app.services import audit

router = api_router()


@router.get("/audit", responses={422: {}})
def list_events(
    user: CurrentUser,
    db: DbSession,
    settings: AppSettings,
    action: str = Query("", description="Only this action (see the audit page's list)."),
    email: str = Query("", max_length=320, description="Only events whose user email contains this."),
    since: date | None = Query(None, description="From this day (UTC), e.g. 2026-01-31."),
    until: date | None = Query(None, description="Up to and including this day (UTC)."),
    page: int = Query(1, ge=1, le=1_000_000),
    page_size: int | None = Query(None, ge=1, le=1000),
) -> AuditPagePublic:
    """Who did what, to what, when and from where; newest first."""
    if action and action not in audit.ACTIONS:
        raise HTTPException(422, f"There is no audit action {action!r}; known: {', '.join(audit.ACTIONS)}.")
    f = audit.AuditFilter(workspace_id=None if user.is_admin else user.workspace_id, action=action, user=email, since=since, until=until)
    result = audit.events_page(db, f, page, page_size or settings.audit_page_size)
    return AuditPagePublic(
        page=result.page,
        page_size=result.page_size,
        total=result.total,
        has_next=result.has_next,
        events=[AuditEventPublic.model_validate(e) for e in result.events],
    )
