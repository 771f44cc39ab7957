"""A bearer token's last use is recorded at most once a minute: not a database write per request,
which made 200 requests arriving together queue on SQLite's write lock (500s, "database is locked")."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from app.models import ApiToken
from tests.app.helpers import bearer


def _last_used(db, user_id):
    db.expire_all()
    return db.scalar(select(ApiToken.last_used_at).where(ApiToken.user_id == user_id))


def test_a_tokens_last_use_is_written_once_a_minute(client, make_user, db):
    user = make_user()
    assert client.get("/api/v1/datasets", headers=bearer(user.token)).status_code == 200
    first = _last_used(db, user.id)
    assert first is not None
    assert client.get("/api/v1/datasets", headers=bearer(user.token)).status_code == 200
    assert _last_used(db, user.id) == first  # within the minute: no write
    token = db.scalar(select(ApiToken).where(ApiToken.user_id == user.id))
    token.last_used_at = first - timedelta(minutes=2)
    db.commit()
    assert client.get("/api/v1/datasets", headers=bearer(user.token)).status_code == 200
    assert _last_used(db, user.id) > first - timedelta(minutes=2)
