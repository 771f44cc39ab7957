"""The audit log: who did what, to what, when and from where. `record` adds one row (flushed,
never committed: the caller's boundary commits it with the change it describes); `events_page`
and `csv_lines` read it back, filtered. Nothing here changes or deletes a row, and no route does.
Callers pass plain values (RequestMeta), never a request."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from app.models import AuditEvent, User
from app.services.tabular_formats import neutralise_formula

# Every action the log knows, with what it means (the page's filter lists them).
ACTIONS: dict[str, str] = {
    "sign_in": "signed in",
    "sign_in_failed": "a sign-in failed",
    "dataset_uploaded": "uploaded a dataset",
    "dataset_deleted": "deleted a dataset",
    "dataset_downloaded": "downloaded a dataset as CSV",
    "job_started": "started a training job",
    "bakeoff_started": "started a bake-off",
    "job_cancelled": "cancelled a job",
    "adapter_status_changed": "approved, archived or re-drafted an adapter",
    "adapter_downloaded": "downloaded an adapter or one of its exports",
    "export_requested": "asked for an export of an adapter",
    "token_created": "created an API token",
    "token_revoked": "revoked an API token",
    "member_invited": "invited someone to the workspace",
    "invite_revoked": "revoked an invite",
    "invite_accepted": "accepted an invite and joined",
    "role_changed": "changed someone's role",
    "member_disabled": "disabled a user",
    "member_enabled": "enabled a user again",
    "member_removed": "removed a user",
    "quota_changed": "changed a workspace's quotas",  # quotas (issue 16)
}


@dataclass(frozen=True)
class RequestMeta:
    """Where an action came from: the client's address and user agent (None when not known)."""

    client_ip: str | None = None
    user_agent: str | None = None


CLI = RequestMeta(client_ip=None, user_agent="tailor command line")


def _text(value: Any, limit: int) -> str | None:
    """Stored as typed by whoever sent it, but without NUL bytes (PostgreSQL refuses them) and cut to the column."""
    if value is None or value == "":
        return None
    return str(value).replace("\x00", "")[:limit]


def record(
    db: Session,
    meta: RequestMeta,
    actor: User | None,
    action: str,
    target: tuple[str, Any] | None = None,
    details: dict[str, Any] | None = None,
    *,
    email: str | None = None,
    workspace_id: int | None = None,
) -> AuditEvent:
    """Add one event. `actor` is who did it (None for a failed sign-in: pass the `email` tried);
    `target` a (type, id) pair; the workspace is the actor's unless given."""
    if action not in ACTIONS:
        raise ValueError(f"Unknown audit action {action!r}; add it to ACTIONS.")
    event = AuditEvent(
        workspace_id=workspace_id if workspace_id is not None else (actor.workspace_id if actor else None),
        user_id=actor.id if actor else None,
        user_email=_text(actor.email if actor else email, 320),
        action=action,
        target_type=target[0] if target else None,
        target_id=_text(target[1], 80) if target else None,
        details=details or {},
        client_ip=_text(meta.client_ip, 64),
        user_agent=_text(meta.user_agent, 400),
    )
    db.add(event)
    db.flush()
    return event


@dataclass(frozen=True)
class AuditFilter:
    """What to show. workspace_id None = every workspace (instance administrators only)."""

    workspace_id: int | None
    action: str = ""
    user: str = ""  # part of the email
    since: date | None = None
    until: date | None = None  # inclusive


def _query(f: AuditFilter) -> Select:
    query = select(AuditEvent)
    if f.workspace_id is not None:
        query = query.where(AuditEvent.workspace_id == f.workspace_id)
    if f.action:
        query = query.where(AuditEvent.action == f.action)
    if f.user:
        query = query.where(func.lower(AuditEvent.user_email).contains(f.user.strip().lower(), autoescape=True))
    if f.since is not None:
        query = query.where(AuditEvent.created_at >= datetime.combine(f.since, time.min, tzinfo=UTC))
    if f.until is not None:
        query = query.where(AuditEvent.created_at < datetime.combine(f.until + timedelta(days=1), time.min, tzinfo=UTC))
    return query


@dataclass
class AuditPage:
    events: list[AuditEvent]
    page: int
    page_size: int
    total: int

    @property
    def has_next(self) -> bool:
        return self.page * self.page_size < self.total


def events_page(db: Session, f: AuditFilter, page: int, page_size: int) -> AuditPage:
    """Newest first, `page` counted from 1."""
    page = max(1, page)
    query = _query(f)
    total = db.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = db.scalars(query.order_by(AuditEvent.id.desc()).offset((page - 1) * page_size).limit(page_size)).all()
    return AuditPage(list(rows), page, page_size, total)


CSV_HEADER = [
    "id",
    "time_utc",
    "workspace_id",
    "user_id",
    "user_email",
    "action",
    "target_type",
    "target_id",
    "details",
    "client_ip",
    "user_agent",
]


def _iso(value: datetime) -> str:
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()


def csv_lines(db: Session, f: AuditFilter, batch: int = 1000) -> Iterator[str]:
    """Every matching event as CSV, oldest first, in batches; each cell made inert for spreadsheets
    (the same helper as the dataset exports)."""
    import json

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_HEADER)
    last_id = 0
    while True:
        rows = db.scalars(_query(f).where(AuditEvent.id > last_id).order_by(AuditEvent.id).limit(batch)).all()
        for e in rows:
            cells = [e.id, _iso(e.created_at), e.workspace_id, e.user_id, e.user_email, e.action, e.target_type, e.target_id]
            cells += [json.dumps(e.details or {}, sort_keys=True), e.client_ip, e.user_agent]
            writer.writerow(["" if c is None else neutralise_formula(str(c)) for c in cells])
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        if len(rows) < batch:
            return
        last_id = rows[-1].id
