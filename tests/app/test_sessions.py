"""Sessions live on the server: a cookie kept from before sign-out, a password change or disabling
the user is refused; people see their sessions and end them."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import select

from app.main import app
from app.models import UserSession
from app.services import user_sessions
from tests.conftest import csrf_from, sign_in


def _cookie(client: TestClient) -> str:
    return client.cookies.get("tailor_session")


def _replay(cookie: str, path: str = "/api/v1/datasets"):
    """A fresh browser that sends only the kept cookie (the attacker's copy)."""
    with TestClient(app, cookies={"tailor_session": cookie}) as attacker:
        return attacker.get(path, follow_redirects=False)


def test_a_cookie_kept_from_before_logout_is_refused(client, make_user):
    user = make_user("leaver")
    csrf = sign_in(client, user.email, user.password)
    kept = _cookie(client)
    assert _replay(kept).status_code == 200  # the copy works while the session lives
    assert client.post("/logout", data={"csrf_token": csrf}).url.path == "/login"
    assert _replay(kept).status_code == 401
    page = _replay(kept, "/")
    assert page.status_code == 303 and page.headers["location"].startswith("/login")


def test_the_cookie_carries_only_a_session_id_stored_hashed(client, make_user, db):
    import base64
    import json

    user = make_user("cookie")
    sign_in(client, user.email, user.password)
    payload = json.loads(base64.b64decode(_cookie(client).split(".")[0] + "=="))
    assert set(payload) == {"sid", "csrf"} and "user_id" not in payload
    row = db.scalar(select(UserSession).where(UserSession.user_id == user.id))
    assert row.id_hash != payload["sid"] and len(row.id_hash) == 64
    assert row.ip_address == "testclient" and row.user_agent and row.ended_at is None


def test_a_forged_cookie_with_a_user_id_is_refused(make_user, settings):
    """The old cookie shape, correctly signed: without a live session id it signs nobody in."""
    import base64
    import json

    from itsdangerous import TimestampSigner

    user = make_user("forged")
    data = base64.b64encode(json.dumps({"user_id": user.id}).encode())
    cookie = TimestampSigner(settings.session_secret()).sign(data).decode()
    assert _replay(cookie).status_code == 401


def test_sessions_page_lists_them_and_ends_one_and_all_others(make_user):
    user = make_user("many")
    browsers = [TestClient(app) for _ in range(3)]
    try:
        csrfs = [sign_in(b, user.email, user.password) for b in browsers]
        me = browsers[0]
        listed = me.get("/api/v1/account/sessions").json()
        assert len(listed) == 3 and sum(s["current"] for s in listed) == 1
        page = me.get("/account")
        assert page.status_code == 200 and page.text.count("data-session=") == 3 and "this browser" in page.text

        other = next(s for s in listed if not s["current"])
        response = me.post(f"/account/sessions/{other['id']}/end", data={"csrf_token": csrfs[0]}, follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"] == "/account"
        alive = [b.get("/api/v1/datasets").status_code for b in browsers]
        assert sorted(alive) == [200, 200, 401]

        response = me.post("/account/sessions/end-others", data={"csrf_token": csrfs[0]})
        assert response.status_code == 200 and "Signed out 1 other session." in response.text
        assert [b.get("/api/v1/datasets").status_code for b in browsers] == [200, 401, 401]
        assert len(me.get("/api/v1/account/sessions").json()) == 1
    finally:
        for b in browsers:
            b.close()


def test_a_person_cannot_end_someone_elses_session(client, make_user):
    owner, stranger = make_user("owner"), make_user("stranger")
    sign_in(client, owner.email, owner.password)
    session_id = client.get("/api/v1/account/sessions").json()[0]["id"]
    response = client.delete(f"/api/v1/account/sessions/{session_id}", headers={"Authorization": f"Bearer {stranger.token}"})
    assert response.status_code == 404
    assert client.get("/api/v1/datasets").status_code == 200


def test_a_password_change_ends_the_other_sessions_and_keeps_this_one(make_user):
    user = make_user("changer")
    with TestClient(app) as mine, TestClient(app) as stolen:
        csrf = sign_in(mine, user.email, user.password)
        sign_in(stolen, user.email, user.password)
        wrong = mine.post("/account/password", data={"csrf_token": csrf, "current_password": "nope", "new_password": "a new password 1"})
        assert wrong.status_code == 400 and "current password is not right" in wrong.text
        assert stolen.get("/api/v1/datasets").status_code == 200
        done = mine.post(
            "/account/password", data={"csrf_token": csrf, "current_password": user.password, "new_password": "a new password 1"}
        )
        assert done.status_code == 200 and "1 other session signed out" in done.text
        assert mine.get("/api/v1/datasets").status_code == 200
        assert stolen.get("/api/v1/datasets").status_code == 401
    with TestClient(app) as fresh:
        sign_in(fresh, user.email, "a new password 1")


def test_the_api_password_change_refuses_a_short_password(client, make_user):
    user = make_user("short")
    response = client.post(
        "/api/v1/account/password",
        headers={"Authorization": f"Bearer {user.token}"},
        json={"current_password": user.password, "new_password": "short"},
    )
    assert response.status_code == 400 and "at least 8 characters" in response.json()["detail"]


def test_end_sessions_for_disabling_a_user_signs_every_browser_out(make_user):
    """The service function the user management calls when it disables someone."""
    from app.db import session_scope

    user = make_user("disabled")
    with TestClient(app) as one, TestClient(app) as two:
        sign_in(one, user.email, user.password)
        sign_in(two, user.email, user.password)
        with session_scope() as db:
            assert user_sessions.end_sessions(db, user.id) == 2
        assert one.get("/api/v1/datasets").status_code == 401
        assert two.get("/api/v1/datasets").status_code == 401


def test_last_seen_is_written_at_most_once_a_minute(client, make_user, db):
    from datetime import timedelta

    from app.models import utcnow

    user = make_user("seen")
    sign_in(client, user.email, user.password)
    row = db.scalar(select(UserSession).where(UserSession.user_id == user.id))
    first_seen = row.last_seen_at
    client.get("/api/v1/datasets")
    db.refresh(row)
    assert row.last_seen_at == first_seen  # no write on every request
    row.last_seen_at = utcnow() - timedelta(minutes=2)
    db.commit()
    client.get("/api/v1/datasets")
    db.refresh(row)
    assert row.last_seen_at.replace(tzinfo=None) > (utcnow() - timedelta(seconds=30)).replace(tzinfo=None)


def test_a_session_older_than_the_sign_in_lifetime_is_refused(client, make_user, db, settings):
    from datetime import timedelta

    user = make_user("old")
    sign_in(client, user.email, user.password)
    row = db.scalar(select(UserSession).where(UserSession.user_id == user.id))
    row.created_at = row.created_at - timedelta(seconds=settings.session_max_age_seconds + 60)
    db.commit()
    assert client.get("/api/v1/datasets").status_code == 401


def test_the_session_check_is_one_query(client, make_user):
    """Signing a request in costs one indexed lookup (user loaded in the same query)."""
    from sqlalchemy import event

    from app.db import get_engine
    from app.http.auth import signed_in_user
    from app.services.user_sessions import session_for

    user = make_user("cheap")
    sign_in(client, user.email, user.password)
    statements: list[str] = []

    def count(conn, cursor, statement, *args):
        statements.append(statement)

    from app.db import get_sessionmaker

    with get_sessionmaker()() as db:
        rows = user_sessions.active_sessions(db, user.id, max_age_seconds=3600)
        assert len(rows) == 1
    engine = get_engine()
    event.listen(engine, "before_cursor_execute", count)
    try:
        cookie_sid = _sid_of(client)
        with get_sessionmaker()() as db:
            live = session_for(db, cookie_sid, max_age_seconds=3600)
            assert live is not None and live.user.email == user.email
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert len([s for s in statements if s.lstrip().upper().startswith("SELECT")]) == 1
    assert signed_in_user  # the dependency that calls session_for


def _sid_of(client: TestClient) -> str:
    import base64
    import json

    return json.loads(base64.b64decode(_cookie(client).split(".")[0] + "=="))["sid"]


def test_login_page_still_has_a_csrf_token_after_logout(client, make_user):
    user = make_user("again")
    csrf = sign_in(client, user.email, user.password)
    client.post("/logout", data={"csrf_token": csrf})
    assert csrf_from(client.get("/login").text)


def test_an_out_of_range_session_id_is_a_plain_422(client, make_user):
    user = make_user("range")
    response = client.delete(f"/api/v1/account/sessions/{2**70}", headers={"Authorization": f"Bearer {user.token}"})
    assert response.status_code == 422 and "detail" in response.json()


def test_long_ended_sessions_are_removed_at_the_next_sign_in(client, make_user, db):
    from datetime import timedelta

    from app.models import utcnow

    user = make_user("tidy")
    with TestClient(app) as old, TestClient(app) as recent:
        sign_in(old, user.email, user.password)
        sign_in(recent, user.email, user.password)
    rows = db.scalars(select(UserSession).where(UserSession.user_id == user.id).order_by(UserSession.id)).all()
    rows[0].ended_at = utcnow() - timedelta(days=31)
    rows[1].ended_at = utcnow() - timedelta(days=1)
    old_id, recent_id = rows[0].id, rows[1].id
    db.commit()
    sign_in(client, user.email, user.password)
    db.expire_all()
    left = db.scalars(select(UserSession.id).where(UserSession.user_id == user.id)).all()
    assert old_id not in left and recent_id in left and len(left) == 2


def test_disabling_a_user_signs_their_browsers_out_at_once(client, make_user, db):
    """The owner disables a colleague through the members API: the colleague's kept cookie is refused
    (not only their sign-in), and their session rows are ended."""
    from app.models import User

    owner, colleague = make_user("owner"), make_user("colleague")
    member = db.get(User, colleague.id)
    member.workspace_id = db.get(User, owner.id).workspace_id
    member.role = "member"
    db.commit()
    with TestClient(app) as browser:
        sign_in(browser, colleague.email, colleague.password)
        kept = _cookie(browser)
        assert browser.get("/api/v1/datasets").status_code == 200
        response = client.patch(
            f"/api/v1/members/{colleague.id}", headers={"Authorization": f"Bearer {owner.token}"}, json={"disabled": True}
        )
        assert response.status_code == 200, response.text
        assert browser.get("/api/v1/datasets").status_code == 401
    assert _replay(kept).status_code == 401
    db.expire_all()
    assert all(row.ended_at is not None for row in db.scalars(select(UserSession).where(UserSession.user_id == colleague.id)))
