"""Users, workspaces, password hashing and API tokens."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import UTC, datetime, timedelta
from functools import lru_cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.config import get_settings
from app.domain.roles import ROLES
from app.models import ApiToken, User, Workspace, utcnow

# A token's last use is recorded at most this often (a write per request would serialise requests on SQLite).
TOKEN_TOUCH_INTERVAL = timedelta(minutes=1)

# Hashes written before Argon2id: still verified, and replaced at the next successful sign-in.
_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}
# The password hash of accounts that sign in only by SSO: no password matches it.
NO_PASSWORD = "!no-password"


class AccountError(ValueError):
    """A problem with an account request, worded for the person who made it."""


@lru_cache(maxsize=4)
def _hasher_with(time_cost: int, memory_kib: int, parallelism: int) -> PasswordHasher:
    return PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism)


def _hasher() -> PasswordHasher:
    """Argon2id with the configured cost (default: argon2-cffi's, RFC 9106's low-memory profile). The
    parameters are stored in each hash, so raising them upgrades every password at its owner's next sign-in."""
    settings = get_settings()
    return _hasher_with(settings.password_hash_time_cost, settings.password_hash_memory_kib, settings.password_hash_parallelism)


def hash_password(password: str) -> str:
    return _hasher().hash(password)


def _verify_scrypt(password: str, stored: str) -> bool:
    try:
        scheme, salt_hex, digest_hex = stored.split("$")
        salt = bytes.fromhex(salt_hex)
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    digest = hashlib.scrypt(password.encode(), salt=salt, **_SCRYPT)
    return hmac.compare_digest(digest.hex(), digest_hex)


def verify_password(password: str, stored: str) -> bool:
    if stored.startswith("scrypt$"):
        return _verify_scrypt(password, stored)
    if not stored.startswith("$argon2"):
        return False
    try:
        return _hasher().verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(stored: str) -> bool:
    """True for a hash from before Argon2id or with weaker parameters than today's."""
    return stored.startswith("scrypt$") or (stored.startswith("$argon2") and _hasher().check_needs_rehash(stored))


def _dummy_hash() -> str:
    return _dummy_hash_with(_hasher())


@lru_cache(maxsize=4)
def _dummy_hash_with(hasher: PasswordHasher) -> str:
    return hasher.hash(secrets.token_urlsafe(16))


def normalise_email(email: str) -> str:
    return email.strip().lower()


def create_user(
    db: Session, email: str, password: str, *, is_admin: bool = False, workspace: Workspace | None = None, role: str | None = None
) -> User:
    """Create a user; without a workspace they get a workspace of their own (and own it), else they
    join it as `role` (default member)."""
    email = normalise_email(email)
    if "@" not in email or len(email) > 320:
        raise AccountError("Give a valid email address.")
    if len(password) < 8:
        raise AccountError("Choose a password of at least 8 characters.")
    if db.scalar(select(User).where(User.email == email)):
        raise AccountError(f"A user with the email {email} already exists.")
    role = role or ("owner" if workspace is None else "member")
    if role not in ROLES:
        raise AccountError(f"There is no role {role!r}; choose one of {', '.join(ROLES)}.")
    if workspace is None:
        workspace = Workspace(name=f"{email.split('@')[0]}'s workspace")
        db.add(workspace)
        db.flush()
    user = User(email=email, password_hash=hash_password(password), is_admin=is_admin, workspace_id=workspace.id, role=role)
    db.add(user)
    db.flush()
    return user


def authenticate(db: Session, email: str, password: str) -> User | None:
    """The user with this email and password, or None. A hash from before Argon2id (or with weaker
    parameters) is replaced by a new one on success."""
    user = db.scalar(select(User).where(User.email == normalise_email(email)))
    if user is None:
        verify_password(password, _dummy_hash())  # same work as a real check, so timing does not reveal accounts
        return None
    if not verify_password(password, user.password_hash):
        return None
    if user.disabled_at is not None:  # roles (issue 16): a disabled user cannot sign in
        return None
    if needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    return user


def change_password(db: Session, user: User, current: str, new: str) -> None:
    """Set a new password after checking the current one (an SSO-only account has none to check).
    The caller ends the user's other sessions."""
    if user.password_hash != NO_PASSWORD and not verify_password(current, user.password_hash):
        raise AccountError("The current password is not right.")
    if len(new) < 8:
        raise AccountError("Choose a password of at least 8 characters.")
    if len(new) > 1000:
        raise AccountError("Choose a password of at most 1000 characters.")
    user.password_hash = hash_password(new)
    db.flush()


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
    if row is None or row.revoked_at is not None or row.user.disabled_at is not None:
        return None
    now, last = utcnow(), row.last_used_at
    expires = row.expires_at
    if expires is not None and (expires if expires.tzinfo else expires.replace(tzinfo=UTC)) <= now:
        return None
    if last is not None and last.tzinfo is None:  # SQLite hands back naive UTC
        last = last.replace(tzinfo=UTC)
    if last is None or now - last > TOKEN_TOUCH_INTERVAL:  # not a write per request: concurrent requests would queue on it
        row.last_used_at = now
    return row


def user_for_token(db: Session, token: str) -> User | None:
    row = token_for_secret(db, token)
    return row.user if row is not None else None


def get_user_by_email(db: Session, email: str) -> User | None:
    return db.scalar(select(User).where(User.email == normalise_email(email)))
