"""What every API router shares: sign-in, the `manage` scope for Bearer tokens, and CSRF for every endpoint."""

from fastapi import APIRouter

from app.http.deps import Csrf, ManageScope, SignedIn


def api_router() -> APIRouter:
    return APIRouter(prefix="/api/v1", dependencies=[SignedIn, ManageScope, Csrf])
