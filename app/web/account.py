"""The signed-in person's own account: their browser sessions (end one, end all others) and their password."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, Path, Request
from fastapi.responses import RedirectResponse

from app.config import get_settings
from app.http.auth import current_session_row_id
from app.http.deps import Csrf, CurrentUser, DbSession
from app.services import accounts, user_sessions
from app.web.templating import render

router = APIRouter(dependencies=[Csrf])


def _page(request: Request, db, user, *, message: str | None = None, error: str | None = None, status_code: int = 200):
    rows = user_sessions.active_sessions(db, user.id, max_age_seconds=get_settings().session_max_age_seconds)
    context = {
        "sessions": rows,
        "current_id": current_session_row_id(request),
        "message": message,
        "error": error,
        "has_password": user.password_hash != accounts.NO_PASSWORD,
    }
    return render(request, "account.html", context, status_code=status_code)


@router.get("/account")
def account_page(request: Request, user: CurrentUser, db: DbSession):
    return _page(request, db, user)


@router.post("/account/sessions/{session_id}/end")
def end_session(session_id: Annotated[int, Path(ge=1, le=2**31 - 1)], request: Request, user: CurrentUser, db: DbSession):
    if not user_sessions.end_session(db, user.id, session_id):
        raise HTTPException(404, "You have no active session with this id.")
    if session_id == current_session_row_id(request):
        request.session.clear()
        return RedirectResponse("/login", status_code=303)
    return RedirectResponse("/account", status_code=303)


@router.post("/account/sessions/end-others")
def end_other_sessions(request: Request, user: CurrentUser, db: DbSession):
    ended = user_sessions.end_sessions(db, user.id, except_session=current_session_row_id(request))
    return _page(request, db, user, message=f"Signed out {ended} other session{'s' if ended != 1 else ''}.")


@router.post("/account/password")
def change_password(request: Request, user: CurrentUser, db: DbSession, current_password: str = Form(""), new_password: str = Form("")):
    try:
        accounts.change_password(db, user, current_password, new_password)
    except accounts.AccountError as exc:
        return _page(request, db, user, error=str(exc), status_code=400)
    ended = user_sessions.end_sessions(db, user.id, except_session=current_session_row_id(request))
    return _page(request, db, user, message=f"Password changed. {ended} other session{'s' if ended != 1 else ''} signed out.")
