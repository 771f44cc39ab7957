"""The API tokens page: create (name, scopes, expiry; the secret shown once), list with last use, revoke."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request

from app.http import auditing
from app.http.deps import Csrf, CurrentUser, DbSession
from app.http.responses import redirect
from app.services import api_tokens
from app.web.templating import render

router = APIRouter(dependencies=[Csrf])


EMPTY_FORM = {"name": "", "scopes": ["serve"], "expires_days": "90"}


def _page(request: Request, db, user, status_code: int = 200, **extra):
    tokens = api_tokens.tokens_of(db, user)
    context = {"tokens": tokens, "states": {t.id: api_tokens.token_state(t) for t in tokens}, "form": EMPTY_FORM, **extra}
    return render(request, "tokens.html", context, status_code=status_code)


@router.get("/settings/tokens")
def tokens_page(request: Request, user: CurrentUser, db: DbSession):
    return _page(request, db, user)


@router.post("/settings/tokens")
async def create_token(request: Request, user: CurrentUser, db: DbSession):
    form = await request.form()
    name, scopes, expires_days = str(form.get("name") or ""), [str(v) for v in form.getlist("scopes")], str(form.get("expires_days") or "")
    values = {"name": name, "scopes": scopes, "expires_days": expires_days}
    try:
        created = api_tokens.create_token(db, user, name, scopes, expires_days)
    except api_tokens.TokenError as exc:
        return _page(request, db, user, 422, form=values, error=str(exc))
    auditing.record(request, db, user, "token_created", ("token", created.id), {"name": name.strip(), "scopes": scopes})
    # The secret is in this answer only; the page after a reload lists the token without it.
    response = _page(request, db, user, new_secret=created.secret, new_name=name)
    response.headers["Cache-Control"] = "no-store"
    return response


@router.post("/settings/tokens/{token_id}/revoke")
def revoke_token(request: Request, token_id: int, user: CurrentUser, db: DbSession):
    token = api_tokens.token_of(db, user, token_id)
    if token is None:
        raise HTTPException(404, "There is no such token among yours.")
    api_tokens.revoke(db, token)
    auditing.record(request, db, user, "token_revoked", ("token", token_id), {"name": token.name})
    return redirect(request, "/settings/tokens")
