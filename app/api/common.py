"""What every API router shares: sign-in and CSRF for every endpoint."""

from fastapi import APIRouter

from app.http.deps import Csrf, SignedIn


def api_router() -> APIRouter:
    return APIRouter(prefix="/api/v1", dependencies=[SignedIn, Csrf])
