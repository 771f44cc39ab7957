"""Your own API tokens in the browser: list, create (the secret shown once), revoke; each recorded in the audit log."""

from __future__ import annotations

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import RedirectResponse

from app.http import auditing
from app.http.deps import Csrf, CurrentUser, DbSession
from app.services import accounts, api_tokens
from app.web.templating import render

router = APIRouter(dependencies=[Csrf])


@router.get("/settings/tokens")
def tokens_page(request: Request, user: CurrentUser, db: DbSession):
    return render(request, "tokens.html", {"tokens": api_tokens.tokens_of(db, user)})


@router.post("/settings/tokens")
def create_token(request: Request, user: CurrentUser, db: DbSession, name: str = Form("browser", max_length=200)):
    secret = accounts.create_api_token(db, user, name=name.strip() or "browser")
    row = api_tokens.tokens_of(db, user)[-1]
    auditing.record(request, db, user, "token_created", ("token", row.id), {"name": row.name})
    return render(request, "tokens.html", {"tokens": api_tokens.tokens_of(db, user), "new_token": secret}, status_code=201)


@router.post("/settings/tokens/{token_id}/revoke")
def revoke_token(request: Request, token_id: int, user: CurrentUser, db: DbSession):
    row = api_tokens.own_token(db, user, token_id)
    if row is None:
        raise HTTPException(404, "You have no such token.")
    details = {"name": row.name}
    api_tokens.revoke(db, row)
    auditing.record(request, db, user, "token_revoked", ("token", token_id), details)
    return RedirectResponse("/settings/tokens", status_code=303)
