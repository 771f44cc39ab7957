"""Single sign-on with OpenID Connect (the authorization-code flow with a client secret, state,
nonce and PKCE with S256, done by Authlib's Starlette client: it keeps the code verifier with the
state in the session and sends it with the code). Offered on the login page when TAILOR_OIDC_ISSUER,
TAILOR_OIDC_CLIENT_ID and TAILOR_OIDC_CLIENT_SECRET are set; who may come in and where they land is
decided by app/services/sso.py. A session begun here remembers the provider's end_session_endpoint
(if its discovery document names one), so that signing out (app/web/home.py) signs out there too."""

from __future__ import annotations

import logging
from functools import lru_cache

import httpx
from authlib.integrations.starlette_client import OAuth, OAuthError, StarletteOAuth2App
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import RedirectResponse
from joserfc.errors import JoseError
from starlette.concurrency import run_in_threadpool

from app.config import Settings, get_settings
from app.db import session_scope
from app.http import auditing
from app.services import sso
from app.web.home import END_SESSION_KEY, _safe_next, start_browser_session
from app.web.templating import render

router = APIRouter()
log = logging.getLogger("tailor.sso")
NEXT_KEY = "sso_next"


@lru_cache(maxsize=4)
def _client(issuer: str, client_id: str, client_secret: str) -> StarletteOAuth2App:
    oauth = OAuth()
    client = oauth.register(
        name="tailor_sso",
        client_id=client_id,
        client_secret=client_secret,
        server_metadata_url=issuer.rstrip("/") + "/.well-known/openid-configuration",
        client_kwargs={"scope": "openid email profile", "code_challenge_method": "S256"},
    )
    assert isinstance(client, StarletteOAuth2App)
    return client


def _configured() -> tuple[Settings, StarletteOAuth2App]:
    settings = get_settings()
    if not settings.oidc_enabled:
        raise HTTPException(404, "Single sign-on is not set up on this Tailor.")
    assert settings.oidc_issuer and settings.oidc_client_id and settings.oidc_client_secret
    return settings, _client(settings.oidc_issuer, settings.oidc_client_id, settings.oidc_client_secret)


def _refuse(request: Request, message: str, status_code: int):
    return render(request, "login.html", {"error": message, "next": "/", "sso": True}, status_code=status_code)


@router.get("/login/sso")
async def sso_start(request: Request, next: str = "/"):
    """Send the browser to the provider's sign-in page."""
    _, client = _configured()
    request.session[NEXT_KEY] = _safe_next(next)
    try:
        return await client.authorize_redirect(request, str(request.url_for("sso_callback")))
    except (httpx.HTTPError, OAuthError, ValueError, KeyError):
        log.exception("The OpenID Connect provider could not be reached")
        return _refuse(request, "The single sign-on provider cannot be reached right now. Try again later.", 502)


@router.get("/login/sso/callback", name="sso_callback")
async def sso_callback(request: Request):
    """The provider sends the browser back here with a code: exchange it, check the ID token, sign in."""
    settings, client = _configured()
    try:
        token = await client.authorize_access_token(request)
    except (OAuthError, JoseError, httpx.HTTPError, ValueError, KeyError) as exc:
        log.warning("SSO sign-in failed: %s", exc)
        return _refuse(request, "Single sign-on did not complete (it was cancelled, expired or not valid). Try again.", 400)
    info = token.get("userinfo") or {}
    claims = sso.SsoClaims(
        issuer=str(info.get("iss") or settings.oidc_issuer),
        subject=str(info.get("sub") or ""),
        email=str(info.get("email") or ""),
        email_verified=info.get("email_verified") if isinstance(info.get("email_verified"), bool) else None,
    )
    target = _safe_next(request.session.get(NEXT_KEY, "/"))

    allowed = sso.allowed_domains(settings.oidc_allowed_domains)

    def sign_in() -> str | None:
        """Sign the person in (or refuse them), each recorded in the audit log; the refusal's message or None."""
        with session_scope() as db:  # the boundary that commits, as a request's would
            try:
                with db.begin_nested():  # a refused person leaves nothing half-made behind
                    user = sso.sign_in(db, claims, allowed=allowed, default_role=settings.oidc_default_role)
            except sso.SsoRefused as exc:
                auditing.record(request, db, None, "sign_in_failed", None, {"method": "sso"}, email=claims.email[:320])
                return str(exc)
            start_browser_session(request, db, user.id, "sso")
            auditing.record(request, db, user, "sign_in", ("user", user.id), {"method": "sso"})
            return None

    refused = await run_in_threadpool(sign_in)
    if refused is not None:
        return _refuse(request, refused, 403)
    end_session = (client.server_metadata or {}).get("end_session_endpoint")
    if settings.oidc_provider_logout and isinstance(end_session, str) and end_session.startswith(("https://", "http://")):
        request.session[END_SESSION_KEY] = end_session
    return RedirectResponse(target, status_code=303)
