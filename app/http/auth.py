"""Who is asking: the signed-in user (Bearer token or session cookie) and the CSRF check."""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass

from fastapi import Request
from sqlalchemy.orm import Session

from app.config import get_settings
from app.domain.roles import allows
from app.models import User
from app.services.accounts import token_for_secret
from app.services.user_sessions import session_for

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
# The key in the signed cookie that holds the server-side session's random id (app/services/user_sessions.py).
SESSION_ID_KEY = "sid"


@dataclass(frozen=True)
class Viewer:
    """Who is looking at a page, detached from any database session."""

    id: int
    email: str
    workspace_id: int
    is_admin: bool
    role: str = "viewer"  # roles (issue 16): viewer | member | owner (app/domain/roles.py)

    def may(self, needed: str) -> bool:
        """Whether this person passes a rule needing `needed` (a role, or "admin")."""
        return allows(self.role, self.is_admin, needed)


class LoginRequired(Exception):
    """Raised when a request needs a signed-in user; pages redirect, the API answers 401."""


class CsrfFailed(Exception):
    """Raised when a cookie-authenticated form or request lacks a valid CSRF token."""


def csrf_token(request: Request) -> str:
    """The session's CSRF token, created on first use."""
    token = request.session.get("csrf")
    if not token:
        token = secrets.token_urlsafe(32)
        request.session["csrf"] = token
    return token


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def signed_in_user(request: Request, db: Session) -> User:
    """The signed-in user from a Bearer token or the session cookie; raises LoginRequired."""
    token = bearer_token(request)
    if token is not None:
        row = token_for_secret(db, token)
        user = row.user if row is not None else None
        request.state.auth_scheme = "bearer"
        request.state.token_scopes = set(row.scopes.split()) if row is not None else set()
    else:
        # One indexed lookup of the cookie's session id: ended (signed out, password changed, user
        # disabled) or unknown sessions are refused even though the cookie's signature is good.
        live = session_for(db, request.session.get(SESSION_ID_KEY), max_age_seconds=get_settings().session_max_age_seconds)
        user = live.user if live is not None else None
        request.state.session_row_id = live.id if live is not None else None
        request.state.auth_scheme = "session"
    if user is None or user.disabled_at is not None:  # roles (issue 16): disabled users are refused
        raise LoginRequired()
    # A plain snapshot for templates: error pages render after the session has been rolled back.
    request.state.user = Viewer(id=user.id, email=user.email, workspace_id=user.workspace_id, is_admin=user.is_admin, role=user.role)
    return user


class ScopeMissing(Exception):
    """Raised when a Bearer token lacks the scope a route needs (the API answers 403)."""


def require_token_scope(request: Request, scope: str) -> None:
    """A Bearer-authenticated request must carry a token with this scope; the browser session has them all."""
    if getattr(request.state, "auth_scheme", None) == "bearer" and scope not in getattr(request.state, "token_scopes", set()):
        raise ScopeMissing(scope)


async def verify_csrf(request: Request) -> None:
    """Unsafe requests authenticated by cookie must carry the session's CSRF token
    (a form field or the X-CSRF-Token header that htmx sends). Bearer requests are exempt:
    a browser never attaches them by itself."""
    if request.method in SAFE_METHODS or bearer_token(request) is not None:
        return
    expected = request.session.get("csrf")
    sent = request.headers.get(CSRF_HEADER)
    if not sent and request.headers.get("content-type", "").startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        form = await request.form()
        value = form.get(CSRF_FIELD)
        sent = value if isinstance(value, str) else None
    if not expected or not sent or not hmac.compare_digest(expected, sent):
        raise CsrfFailed()


def current_session_row_id(request: Request) -> int | None:
    """The row id of the server-side session that authenticated this request (None for a Bearer token)."""
    return getattr(request.state, "session_row_id", None)
