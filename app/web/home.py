"""Sign in, sign out and the dashboard."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse

from app.config import get_settings
from app.http import auditing
from app.http.auth import SESSION_ID_KEY
from app.http.deps import Csrf, CurrentUser, DbSession
from app.services import accounts, adapters, dataset_ingest, jobs, sign_in_throttle, sso, user_sessions
from app.web.templating import render

router = APIRouter(dependencies=[Csrf])
# The provider's end_session_endpoint, kept in the session of a sign-in by SSO (app/web/sso.py).
END_SESSION_KEY = "sso_end_session"


def _safe_next(target: str) -> str:
    """Only paths of this site: never redirect a person to another site after sign-in. Refused (→ "/"):
    anything not starting with one "/", "//host" and "/\\host" (browsers read a backslash as a slash),
    the same percent-encoded, control characters (browsers drop tabs and newlines), absolute URLs."""
    decoded = target
    for _ in range(3):  # %255C → %5C → \\
        decoded = unquote(decoded)
    if not target.startswith("/") or "\\" in decoded or any(ord(c) < 32 or ord(c) == 127 for c in decoded):
        return "/"
    if decoded.startswith("//"):
        return "/"
    parts = urlsplit(decoded)
    return target if not parts.scheme and not parts.netloc else "/"


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def start_browser_session(request: Request, db, user_id: int, method: str) -> None:
    """A fresh server-side session (and CSRF token) for this browser; the cookie carries only its id.
    The user's long-ended sessions are cleared away on the way."""
    user_sessions.prune_sessions(db, user_id, max_age_seconds=get_settings().session_max_age_seconds)
    request.session.clear()
    request.session[SESSION_ID_KEY] = user_sessions.start_session(
        db, user_id, ip_address=client_address(request), user_agent=request.headers.get("user-agent", ""), method=method
    )


@router.get("/login")
def login_page(request: Request, next: str = "/"):
    return render(request, "login.html", {"next": _safe_next(next), "sso": get_settings().oidc_enabled})


@router.post("/login")
def login(request: Request, db: DbSession, email: str = Form(""), password: str = Form(""), next: str = Form("/")):
    target = _safe_next(next)
    context = {"email": email, "next": target, "sso": get_settings().oidc_enabled}
    address = client_address(request)
    throttled = sign_in_throttle.check_before_sign_in(email, address)  # before any password hash is computed
    if throttled is not None:
        auditing.record(request, db, None, "sign_in_failed", None, {"throttled": True}, email=accounts.normalise_email(email)[:320])
        return render(
            request,
            "login.html",
            {**context, "error": throttled.message},
            status_code=429,
            headers={"Retry-After": str(throttled.retry_after)},
        )
    user = accounts.authenticate(db, email, password)
    sign_in_throttle.record_outcome(email, address, succeeded=user is not None)
    if user is None:
        auditing.record(request, db, None, "sign_in_failed", email=accounts.normalise_email(email)[:320])
        return render(request, "login.html", {**context, "error": "That email and password do not match an account."}, status_code=401)
    start_browser_session(request, db, user.id, "password")
    auditing.record(request, db, user, "sign_in", ("user", user.id))
    return RedirectResponse(target, status_code=303)


@router.post("/logout")
def logout(request: Request, db: DbSession):
    user_sessions.end_session_by_cookie(db, request.session.get(SESSION_ID_KEY))
    end_session = request.session.get(END_SESSION_KEY)
    request.session.clear()
    settings = get_settings()
    if isinstance(end_session, str) and settings.oidc_enabled and settings.oidc_provider_logout:
        # Signed in by SSO: sign out at the provider too, which sends the browser back to the login page.
        back = str(request.url_for("login_page"))
        return RedirectResponse(sso.end_session_url(end_session, settings.oidc_client_id or "", back), status_code=303)
    return RedirectResponse("/login", status_code=303)


@router.get("/")
def dashboard(request: Request, user: CurrentUser, db: DbSession):
    return render(
        request,
        "dashboard.html",
        {
            "datasets": dataset_ingest.datasets_for(db, user.workspace_id),
            "jobs": jobs.jobs_for(db, user.workspace_id, limit=20),
            "adapters": adapters.adapters_for(db, user.workspace_id),
        },
    )
