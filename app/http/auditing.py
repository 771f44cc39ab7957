"""The audit log from a route: where the request came from, as plain values for app/services/audit.py."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from sqlalchemy.orm import Session

from app.models import User
from app.services import audit


def request_meta(request: Request) -> audit.RequestMeta:
    return audit.RequestMeta(client_ip=request.client.host if request.client else None, user_agent=request.headers.get("user-agent"))


def record(
    request: Request,
    db: Session,
    actor: User | None,
    action: str,
    target: tuple[str, Any] | None = None,
    details: dict[str, Any] | None = None,
    **extra: Any,
) -> None:
    """Record an audit event for this request; it commits with the request's changes."""
    audit.record(db, request_meta(request), actor, action, target, details, **extra)
