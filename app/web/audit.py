"""The audit log page (owners: their workspace; instance administrators: every workspace),
filtered by action, user and dates, paged, and its CSV export. Read-only: there is no route that
changes or deletes an event."""

from __future__ import annotations

from datetime import date
from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import StreamingResponse

from app.db import session_scope
from app.http.deps import AppSettings, Csrf, CurrentUser, DbSession
from app.models import User
from app.services import audit
from app.web.templating import render

router = APIRouter(dependencies=[Csrf])


def audit_filter(user: User, action: str, who: str, since: str, until: str) -> audit.AuditFilter:
    """The filter from query values; administrators see every workspace. 422 for a bad date or action."""
    if action and action not in audit.ACTIONS:
        raise HTTPException(422, f"There is no audit action {action!r}.")
    try:
        start = date.fromisoformat(since) if since else None
        end = date.fromisoformat(until) if until else None
    except ValueError:
        raise HTTPException(422, "Dates must look like 2026-01-31.") from None
    return audit.AuditFilter(
        workspace_id=None if user.is_admin else user.workspace_id, action=action, user=who[:320], since=start, until=end
    )


@router.get("/settings/audit")
def audit_page(
    request: Request,
    user: CurrentUser,
    db: DbSession,
    settings: AppSettings,
    action: str = "",
    who: str = Query("", alias="user"),
    since: str = "",
    until: str = "",
    page: int = Query(1, ge=1, le=1_000_000),
):
    f = audit_filter(user, action, who, since, until)
    result = audit.events_page(db, f, page, settings.audit_page_size)
    query = {"action": action, "user": who, "since": since, "until": until}
    return render(
        request,
        "audit.html",
        {
            "result": result,
            "actions": audit.ACTIONS,
            "filters": query,
            "query": urlencode({k: v for k, v in query.items() if v}),
            "all_workspaces": f.workspace_id is None,
        },
    )


@router.get("/settings/audit.csv")
def audit_csv(user: CurrentUser, action: str = "", who: str = Query("", alias="user"), since: str = "", until: str = ""):
    """Every matching event, oldest first; cells made inert for spreadsheets."""
    f = audit_filter(user, action, who, since, until)

    def lines():
        with session_scope() as db:  # the request's session has closed by the time the body streams
            yield from audit.csv_lines(db, f)

    return StreamingResponse(
        lines(), media_type="text/csv; charset=utf-8", headers={"Content-Disposition": 'attachment; filename="tailor-audit.csv"'}
    )
