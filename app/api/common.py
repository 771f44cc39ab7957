"""What every API router shares: sign-in and CSRF for every endpoint."""

from fastapi import APIRouter, Depends

from app.web.deps import current_user, verify_csrf


def api_router() -> APIRouter:
    return APIRouter(prefix="/api/v1", dependencies=[Depends(current_user), Depends(verify_csrf)])
