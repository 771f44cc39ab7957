"""Users, workspaces, password hashing and API tokens."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import UTC, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.models import ApiToken, User, Workspace, utcnow

# A token's last use is recorded at most this often (a write per request would serialise requests on SQLite).
TOKEN_TOUCH_INTERVAL = timedelta(minutes=1)
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


def create_api_token(db: Session, user: User, name: str = "cli") -> str:
    """Create a token and return it; only its hash is stored, so it is shown once."""
    token = "tlr_" + secrets.token_urlsafe(32)
    db.add(ApiToken(user_id=user.id, token_hash=_token_digest(token), name=name))
    db.flush()
    return token


def user_for_token(db: Session, token: str) -> User | None:
    row = db.scalar(select(ApiToken).where(ApiToken.token_hash == _token_digest(token)))
    if row is None:
        return None
    now, last = utcnow(), row.last_used_at
    if last is not None and last.tzinfo is None:  # SQLite hands back naive UTC
        last = last.replace(tzinfo=UTC)
    if last is None or now - last > TOKEN_TOUCH_INTERVAL:  # not a write per request: concurrent requests would queue on it
        row.last_used_at = now
    return row.user


def get_user_by_email(db: Session, email: str) -> User | None:
    return db.scalar(select(User).where(User.email == normalise_email(email)))
