"""Browser sessions kept on the server. The signed cookie carries only a random session id; the
database keeps its SHA-256 (a leaked table cannot be replayed as cookies), who it belongs to, when
and from where it was started and last seen, and when it ended. Every request looks the id up once
(an indexed, unique column); signing out, a password change and disabling a user end sessions at
once, so a cookie kept from before is refused."""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session, joinedload

from app.models import UserSession, utcnow

# last_seen_at is written at most this often per session, so reading a page stays one SELECT.
TOUCH_EVERY = timedelta(seconds=60)
# Ended or expired sessions are kept this long (shown nowhere, but useful to an administrator), then
# removed when their user next signs in.
KEEP_ENDED = timedelta(days=30)


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def start_session(db: Session, user_id: int, *, ip_address: str = "", user_agent: str = "", method: str = "password") -> str:
    """A new session for the user; returns the random id for the cookie (only its hash is stored)."""
    session_id = secrets.token_urlsafe(32)
    db.add(
        UserSession(id_hash=_digest(session_id), user_id=user_id, ip_address=ip_address[:64], user_agent=user_agent[:300], method=method)
    )
    db.flush()
    return session_id


def prune_sessions(db: Session, user_id: int, *, max_age_seconds: int) -> None:
    """Remove the user's sessions that ended, or expired, more than KEEP_ENDED ago."""
    now = utcnow()
    db.execute(
        delete(UserSession).where(
            UserSession.user_id == user_id,
            or_(UserSession.ended_at < now - KEEP_ENDED, UserSession.created_at < now - timedelta(seconds=max_age_seconds) - KEEP_ENDED),
        )
    )


def session_for(db: Session, session_id: object, *, max_age_seconds: int) -> UserSession | None:
    """The live session with this id (its user loaded in the same query), or None when it is unknown,
    ended, or older than the sign-in lifetime. Marks it seen, at most once a minute."""
    if not isinstance(session_id, str) or not session_id or len(session_id) > 200:
        return None
    row = db.scalar(
        select(UserSession)
        .options(joinedload(UserSession.user))
        .where(UserSession.id_hash == _digest(session_id), UserSession.ended_at.is_(None))
    )
    if row is None:
        return None
    now = utcnow()
    if _aware(row.created_at) + timedelta(seconds=max_age_seconds) < now:
        row.ended_at = now
        return None
    if now - _aware(row.last_seen_at) >= TOUCH_EVERY:
        row.last_seen_at = now
    return row


def end_session_by_cookie(db: Session, session_id: object) -> None:
    """Sign-out: end the session this cookie names (nothing happens for an unknown id)."""
    if isinstance(session_id, str) and session_id:
        db.execute(
            update(UserSession).where(UserSession.id_hash == _digest(session_id), UserSession.ended_at.is_(None)).values(ended_at=utcnow())
        )


def end_session(db: Session, user_id: int, session_row_id: int) -> bool:
    """End one of the user's own sessions (by its row id, as listed); False when they have no such live session."""
    result = db.execute(
        update(UserSession)
        .where(UserSession.id == session_row_id, UserSession.user_id == user_id, UserSession.ended_at.is_(None))
        .values(ended_at=utcnow())
    )
    return bool(getattr(result, "rowcount", 0))


def end_sessions(db: Session, user_id: int, except_session: int | None = None) -> int:
    """End every live session of the user except the one with row id `except_session` (the caller's
    own, on a password change); returns how many ended. Call it when a user is disabled."""
    statement = update(UserSession).where(UserSession.user_id == user_id, UserSession.ended_at.is_(None))
    if except_session is not None:
        statement = statement.where(UserSession.id != except_session)
    result = db.execute(statement.values(ended_at=utcnow()))
    return int(getattr(result, "rowcount", 0) or 0)


def active_sessions(db: Session, user_id: int, *, max_age_seconds: int) -> list[UserSession]:
    """The user's live sessions, most recently seen first."""
    cutoff = utcnow() - timedelta(seconds=max_age_seconds)
    return list(
        db.scalars(
            select(UserSession)
            .where(UserSession.user_id == user_id, UserSession.ended_at.is_(None), UserSession.created_at >= cutoff)
            .order_by(UserSession.last_seen_at.desc(), UserSession.id.desc())
        )
    )
