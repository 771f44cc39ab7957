"""A user's own API tokens: list and revoke (creating one is app.services.accounts.create_api_token)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import ApiToken, User


def tokens_of(db: Session, user: User) -> list[ApiToken]:
    return list(db.scalars(select(ApiToken).where(ApiToken.user_id == user.id).order_by(ApiToken.id)).all())


def own_token(db: Session, user: User, token_id: int) -> ApiToken | None:
    row = db.get(ApiToken, token_id)
    return row if row is not None and row.user_id == user.id else None


def revoke(db: Session, row: ApiToken) -> None:
    db.delete(row)
    db.flush()
