"""The signed-in person's own account in the API: their browser sessions and their password."""

from __future__ import annotations

from typing import Annotated

from fastapi import HTTPException, Path, Request, Response

from app.api.common import api_router
from app.config import get_settings
from app.http.auth import current_session_row_id
from app.http.deps import CurrentUser, DbSession
from app.schemas import PasswordChange, SessionPublic, SessionsEnded
from app.services import accounts, user_sessions

router = api_router()
SessionId = Annotated[int, Path(ge=1, le=2**31 - 1, description="A session's id, as listed.")]


@router.get("/account/sessions")
def list_sessions(request: Request, user: CurrentUser, db: DbSession) -> list[SessionPublic]:
    """Your signed-in browsers, most recently seen first."""
    current = current_session_row_id(request)
    rows = user_sessions.active_sessions(db, user.id, max_age_seconds=get_settings().session_max_age_seconds)
    return [
        SessionPublic(
            id=row.id,
            created_at=row.created_at,
            last_seen_at=row.last_seen_at,
            ip_address=row.ip_address,
            user_agent=row.user_agent,
            method=row.method,
            current=row.id == current,
        )
        for row in rows
    ]


@router.delete("/account/sessions/{session_id}", status_code=204)
def end_session(session_id: SessionId, request: Request, user: CurrentUser, db: DbSession) -> Response:
    """Sign one of your browsers out at once."""
    if not user_sessions.end_session(db, user.id, session_id):
        raise HTTPException(404, "You have no active session with this id.")
    return Response(status_code=204)


@router.post("/account/sessions/end-others")
def end_other_sessions(request: Request, user: CurrentUser, db: DbSession) -> SessionsEnded:
    """Sign out every other browser (all of them when called with an API token)."""
    return SessionsEnded(ended=user_sessions.end_sessions(db, user.id, except_session=current_session_row_id(request)))


@router.post("/account/password", status_code=204)
def change_password(body: PasswordChange, request: Request, user: CurrentUser, db: DbSession) -> Response:
    """Set a new password; every other session of yours ends."""
    try:
        accounts.change_password(db, user, body.current_password, body.new_password)
    except accounts.AccountError as exc:
        raise HTTPException(400, str(exc)) from None
    user_sessions.end_sessions(db, user.id, except_session=current_session_row_id(request))
    return Response(status_code=204)
