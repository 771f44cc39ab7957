"""Your own API tokens: list, create (shown once), revoke. Creating and revoking are recorded in the audit log."""

from __future__ import annotations

from fastapi import HTTPException, Request
from fastapi.responses import Response

from app.api.common import api_router
from app.http import auditing
from app.http.deps import CurrentUser, DbSession
from app.schemas_people import TokenCreate, TokenCreated, TokenPublic
from app.services import accounts, api_tokens

router = api_router()


@router.get("/tokens", response_model=list[TokenPublic])
def list_tokens(user: CurrentUser, db: DbSession):
    """Your tokens (names and dates; the secrets themselves are never stored)."""
    return api_tokens.tokens_of(db, user)


@router.post("/tokens", status_code=201)
def create_token(request: Request, body: TokenCreate, user: CurrentUser, db: DbSession) -> TokenCreated:
    secret = accounts.create_api_token(db, user, name=body.name)
    row = api_tokens.tokens_of(db, user)[-1]
    auditing.record(request, db, user, "token_created", ("token", row.id), {"name": row.name})
    return TokenCreated(**TokenPublic.model_validate(row).model_dump(), token=secret)


@router.delete("/tokens/{token_id}", status_code=204, responses={404: {}})
def revoke_token(request: Request, token_id: int, user: CurrentUser, db: DbSession):
    row = api_tokens.own_token(db, user, token_id)
    if row is None:
        raise HTTPException(404, "You have no such token.")
    details = {"name": row.name}
    api_tokens.revoke(db, row)
    auditing.record(request, db, user, "token_revoked", ("token", token_id), details)
    return Response(status_code=204)
