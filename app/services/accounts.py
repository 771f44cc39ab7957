"""Users, workspaces, password hashing and API tokens."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.models import ApiToken, User, Workspace, utcnow

_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}


class AccountError(ValueError):
    """A problem with an account request, worded for the person who made it."""


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, **_SCRYPT)
    return f"scrypt${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, salt_hex, digest_hex = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    digest = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt_hex), **_SCRYPT)
    return hmac.compare_digest(digest.hex(), digest_hex)


def normalise_email(email: str) -> str:
    return email.strip().lower()


def create_user(db: Session, email: str, password: str, *, is_admin: bool = False, workspace: Workspace | None = None) -> User:
    """Create a user; without a workspace they get a workspace of their own."""
    email = normalise_email(email)
    if "@" not in email or len(email) > 320:
        raise AccountError("Give a valid email address.")
    if len(password) < 8:
        raise AccountError("Choose a password of at least 8 characters.")
    if db.scalar(select(User).where(User.email == email)):
        raise AccountError(f"A user with the email {email} already exists.")
    if workspace is None:
        workspace = Workspace(name=f"{email.split('@')[0]}'s workspace")
        db.add(workspace)
        db.flush()
    user = User(email=email, password_hash=hash_password(password), is_admin=is_admin, workspace_id=workspace.id)
    db.add(user)
    db.flush()
    return user


def authenticate(db: Session, email: str, password: str) -> User | None:
    user = db.scalar(select(User).where(User.email == normalise_email(email)))
    if user is None:
        hash_password(password)  # same work as a real check, so timing does not reveal accounts
        return None
    return user if verify_password(password, user.password_hash) else None


def count_users(db: Session) -> int:
    return db.scalar(select(func.count()).select_from(User)) or 0


def _token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_api_token(
    db: Session,
    user: User,
    name: str = "cli",
    *,
    scopes: tuple[str, ...] | list[str] = ("serve", "manage"),
    expires_at: datetime | None = None,
) -> str:
    """Create a token and return it; only its hash is stored, so it is shown once."""
    token = "tlr_" + secrets.token_urlsafe(32)
    db.add(ApiToken(user_id=user.id, token_hash=_token_digest(token), name=name, scopes=" ".join(scopes), expires_at=expires_at))
    db.flush()
    return token


def token_for_secret(db: Session, token: str) -> ApiToken | None:
    """The live token with this secret (not revoked, not expired), its last use recorded; else None."""
    row = db.scalar(select(ApiToken).where(ApiToken.token_hash == _token_digest(token)))
    if row is None or row.revoked_at is not None:
        return None
    now = utcnow()
    expires = row.expires_at
    if expires is not None and (expires if expires.tzinfo else expires.replace(tzinfo=UTC)) <= now:
        return None
    row.last_used_at = now
    return row


def user_for_token(db: Session, token: str) -> User | None:
    row = token_for_secret(db, token)
    return row.user if row is not None else None


def get_user_by_email(db: Session, email: str) -> User | None:
    return db.scalar(select(User).where(User.email == normalise_email(email)))
