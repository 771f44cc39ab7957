"""API tokens a person manages: create (name, scopes, expiry; the secret returned once, only its
hash kept), list with last use, revoke. Checking a token on a request is accounts.token_for_secret."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.domain.serving import SCOPES
from app.models import ApiToken, User, utcnow
from app.services.accounts import create_api_token

MAX_EXPIRY_DAYS = 3650


class TokenError(ValueError):
    """A token request that cannot be done, worded for the person who asked."""


@dataclass(frozen=True)
class NewToken:
    id: int
    secret: str  # shown once


def parse_scopes(values: list[str] | str) -> list[str]:
    chosen = values.split() if isinstance(values, str) else [v for value in values for v in str(value).split()]
    unknown = [s for s in chosen if s not in SCOPES]
    if unknown:
        raise TokenError(f"Unknown scope {unknown[0]!r}: a token's scopes are {' and '.join(SCOPES)}.")
    chosen = [s for s in SCOPES if s in chosen]
    if not chosen:
        raise TokenError("Give the token at least one scope: serve (call /v1) or manage (the management API).")
    return chosen


def parse_expiry_days(value: str | int | None) -> int | None:
    """Days until the token stops working; None (empty) = never."""
    if value is None or str(value).strip() == "":
        return None
    try:
        days = int(str(value).strip())
    except ValueError:
        raise TokenError("The expiry is a whole number of days (or empty for never).") from None
    if not 1 <= days <= MAX_EXPIRY_DAYS:
        raise TokenError(f"The expiry is between 1 and {MAX_EXPIRY_DAYS} days (or empty for never).")
    return days


def create_token(db: Session, user: User, name: str, scopes: list[str] | str, expires_in_days: str | int | None = None) -> NewToken:
    name = (name or "").strip()
    if not name:
        raise TokenError("Name the token after what will use it, e.g. 'support desk'.")
    if len(name) > 200:
        raise TokenError("Keep the token's name under 200 characters.")
    days = parse_expiry_days(expires_in_days)
    expires_at = utcnow() + timedelta(days=days) if days else None
    secret = create_api_token(db, user, name, scopes=parse_scopes(scopes), expires_at=expires_at)
    row = db.scalar(select(ApiToken).where(ApiToken.user_id == user.id).order_by(ApiToken.id.desc()).limit(1))
    assert row is not None
    return NewToken(id=row.id, secret=secret)


def tokens_of(db: Session, user: User) -> list[ApiToken]:
    return list(db.scalars(select(ApiToken).where(ApiToken.user_id == user.id).order_by(ApiToken.id.desc())))


def token_of(db: Session, user: User, token_id: int) -> ApiToken | None:
    """The user's own token by id (None for anyone else's: a 404, never a leak)."""
    row = db.get(ApiToken, token_id)
    return row if row is not None and row.user_id == user.id else None


def revoke(db: Session, token: ApiToken) -> None:
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        db.flush()


def token_state(token: ApiToken, now: datetime | None = None) -> str:
    """'active', 'expired' or 'revoked'."""
    if token.revoked_at is not None:
        return "revoked"
    expires = token.expires_at
    if expires is not None:
        expires = expires if expires.tzinfo else expires.replace(tzinfo=UTC)
        if expires <= (now or utcnow()):
            return "expired"
    return "active"


def token_public(token: ApiToken) -> dict:
    return {
        "id": token.id,
        "name": token.name,
        "scopes": token.scopes.split(),
        "created_at": token.created_at.isoformat() if token.created_at else None,
        "expires_at": token.expires_at.isoformat() if token.expires_at else None,
        "last_used_at": token.last_used_at.isoformat() if token.last_used_at else None,
        "revoked_at": token.revoked_at.isoformat() if token.revoked_at else None,
        "state": token_state(token),
    }
