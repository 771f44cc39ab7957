"""What every API router shares: sign-in and CSRF for every endpoint."""

from fastapi import APIRouter, Depends

from app.http.deps import Csrf, current_user


def api_router() -> APIRouter:
    return APIRouter(prefix="/api/v1", dependencies=[Depends(current_user), Csrf])
