"""API tokens in the API: create (the secret in this answer only), list, revoke."""

from __future__ import annotations

from fastapi import HTTPException, Request
from pydantic import BaseModel, Field

from app.api.common import api_router
from app.http import auditing
from app.http.deps import CurrentUser, DbSession
from app.services import api_tokens

router = api_router()


class TokenCreate(BaseModel):
    name: str = Field(max_length=200)
    scopes: list[str] = Field(default_factory=lambda: ["serve"])
    expires_in_days: int | None = Field(None, description="Days until the token stops working; null for never.")


@router.get("/tokens")
def list_tokens(user: CurrentUser, db: DbSession) -> list[dict]:
    """Your tokens with their scopes, expiry, last use and state (never their secrets)."""
    return [api_tokens.token_public(t) for t in api_tokens.tokens_of(db, user)]


@router.post("/tokens", status_code=201)
def create_token(request: Request, body: TokenCreate, user: CurrentUser, db: DbSession) -> dict:
    """A new token; `secret` is in this answer only (Tailor keeps its hash)."""
    try:
        created = api_tokens.create_token(db, user, body.name, body.scopes, body.expires_in_days)
    except api_tokens.TokenError as exc:
        raise HTTPException(422, str(exc)) from None
    token = api_tokens.token_of(db, user, created.id)
    assert token is not None
    auditing.record(request, db, user, "token_created", ("token", created.id), {"name": token.name, "scopes": body.scopes})
    return {**api_tokens.token_public(token), "secret": created.secret}


@router.delete("/tokens/{token_id}")
def revoke_token(request: Request, token_id: int, user: CurrentUser, db: DbSession) -> dict:
    """Revoke a token: it stops working at once (kept in the list as revoked)."""
    token = api_tokens.token_of(db, user, token_id)
    if token is None:
        raise HTTPException(404, "There is no such token among yours.")
    api_tokens.revoke(db, token)
    auditing.record(request, db, user, "token_revoked", ("token", token_id), {"name": token.name})
    return api_tokens.token_public(token)
