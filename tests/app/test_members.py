"""Invites, roles, disabling and removing users, in the browser pages and the API."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from app.models import Invite, User, utcnow
from tests.app.helpers import bearer
from tests.conftest import csrf_from, sign_in

PASSWORD = "correct horse battery"


def _invite(client, owner_token: str, email: str, role: str = "viewer") -> dict:
    response = client.post("/api/v1/invites", headers=bearer(owner_token), json={"email": email, "role": role})
    assert response.status_code == 201, response.text
    return response.json()


def _path(link: str) -> str:
    """/invite/… of an absolute link."""
    return "/" + link.split("://", 1)[1].split("/", 1)[1]


def _accept(client, link: str, password: str = PASSWORD):
    path = _path(link)
    page = client.get(path)
    assert page.status_code == 200, page.text
    return client.post(path, data={"password": password, "password_again": password, "csrf_token": csrf_from(page.text)})


def test_an_invite_link_joins_the_workspace_with_its_role_once(client, make_user, db):
    owner = make_user("owner")
    email = f"colleague-{owner.id}@example.com"
    created = _invite(client, owner.token, email, "viewer")
    assert created["emailed"] is False and created["link"].startswith("http") and "/invite/inv_" in created["link"]
    token = created["link"].rsplit("/", 1)[1]
    stored = db.get(Invite, created["id"])
    assert token not in stored.token_hash and len(stored.token_hash) == 64  # only the hash is kept

    accepted = _accept(client, created["link"])
    assert accepted.status_code == 200 and "Your account is ready" in accepted.text
    joined = db.query(User).filter_by(email=email).one()
    assert (joined.workspace_id, joined.role) == (db.get(User, owner.id).workspace_id, "viewer")
    # It works once.
    again = client.get(_path(created["link"]))
    assert again.status_code == 410 and "expired or has already been used" in again.text
    # The new colleague signs in and reads, but cannot start anything.
    sign_in(client, email, PASSWORD)
    assert client.get("/").status_code == 200
    assert client.get("/datasets/new", follow_redirects=False).status_code == 403
    members = client.get("/api/v1/members", headers=bearer(owner.token)).json()
    assert {"email": email, "role": "viewer"}.items() <= next(m for m in members if m["email"] == email).items()


def test_an_expired_invite_is_refused(client, make_user, db):
    owner = make_user("owner")
    created = _invite(client, owner.token, f"late-{owner.id}@example.com")
    db.get(Invite, created["id"]).expires_at = utcnow() - timedelta(minutes=1)
    db.commit()
    path = _path(created["link"])
    assert client.get(path).status_code == 410
    response = client.post(
        path, data={"password": PASSWORD, "password_again": PASSWORD, "csrf_token": csrf_from(client.get("/login").text)}
    )
    assert response.status_code == 410
    assert client.get("/api/v1/invites", headers=bearer(owner.token)).json() == []


@pytest.mark.parametrize(
    "body, status, message",
    [
        ({"email": "not-an-email", "role": "viewer"}, 422, "valid email"),
        ({"email": "x@example.com", "role": "superuser"}, 422, "There is no role"),
    ],
)
def test_bad_invites_get_a_plain_message(client, make_user, body, status, message):
    owner = make_user("owner")
    response = client.post("/api/v1/invites", headers=bearer(owner.token), json=body)
    assert response.status_code == status and message in response.json()["detail"]


def test_inviting_someone_who_has_an_account_is_refused(client, make_user):
    owner, other = make_user("owner"), make_user("other")
    response = client.post("/api/v1/invites", headers=bearer(owner.token), json={"email": other.email, "role": "member"})
    assert response.status_code == 409 and "already has an account" in response.json()["detail"]


def test_short_password_keeps_the_invite_usable(client, make_user):
    owner = make_user("owner")
    created = _invite(client, owner.token, f"short-{owner.id}@example.com")
    assert _accept(client, created["link"], "short").status_code == 422
    assert _accept(client, created["link"]).status_code == 200


def _join(client, owner, role: str) -> tuple[int, str]:
    email = f"{role}-{owner.id}-{len(role)}@example.com"
    created = _invite(client, owner.token, email, role)
    assert _accept(client, created["link"]).status_code == 200
    member = next(m for m in client.get("/api/v1/members", headers=bearer(owner.token)).json() if m["email"] == email)
    return member["id"], email


def test_the_last_owner_cannot_be_demoted_disabled_or_removed(client, make_user):
    owner = make_user("owner")
    me = next(m for m in client.get("/api/v1/members", headers=bearer(owner.token)).json() if m["email"] == owner.email)
    demote = client.patch(f"/api/v1/members/{me['id']}", headers=bearer(owner.token), json={"role": "member"})
    assert demote.status_code == 409 and "last owner" in demote.json()["detail"]
    second_id, second_email = _join(client, owner, "owner")
    # With a second owner, the first may step down; the second is then the last one.
    assert client.patch(f"/api/v1/members/{me['id']}", headers=bearer(owner.token), json={"role": "member"}).status_code == 200
    csrf = sign_in(client, second_email, PASSWORD)
    page = client.post(f"/settings/members/{second_id}/role", data={"role": "viewer", "csrf_token": csrf})
    assert page.status_code == 409 and "last owner" in page.text
    # Nobody disables or removes themselves.
    assert client.post(f"/settings/members/{second_id}/remove", data={"csrf_token": csrf}).status_code == 409


def test_disabling_a_user_refuses_their_sign_in_and_their_tokens_until_enabled(client, make_user):
    owner = make_user("owner")
    member_id, email = _join(client, owner, "member")
    sign_in(client, email, PASSWORD)
    assert client.get("/").status_code == 200
    assert client.patch(f"/api/v1/members/{member_id}", headers=bearer(owner.token), json={"disabled": True}).status_code == 200
    # The running browser session ends at its next request; signing in again is refused.
    assert client.get("/", follow_redirects=False).headers["location"].startswith("/login")
    refused = client.post("/login", data={"email": email, "password": PASSWORD, "csrf_token": csrf_from(client.get("/login").text)})
    assert refused.status_code == 401
    assert client.patch(f"/api/v1/members/{member_id}", headers=bearer(owner.token), json={"disabled": False}).status_code == 200
    sign_in(client, email, PASSWORD)


def test_a_disabled_users_api_token_is_refused(client, make_user):
    owner = make_user("owner")
    member_id, email = _join(client, owner, "member")
    from app.db import session_scope
    from app.services.accounts import create_api_token, get_user_by_email

    with session_scope() as db:
        token = create_api_token(db, get_user_by_email(db, email))
    assert client.get("/api/v1/datasets", headers=bearer(token)).status_code == 200
    client.patch(f"/api/v1/members/{member_id}", headers=bearer(owner.token), json={"disabled": True})
    assert client.get("/api/v1/datasets", headers=bearer(token)).status_code == 401


def test_removing_a_user_keeps_what_they_made_and_their_name_in_the_audit_log(client, make_user):
    owner = make_user("owner")
    member_id, email = _join(client, owner, "member")
    assert client.delete(f"/api/v1/members/{member_id}", headers=bearer(owner.token)).status_code == 204
    assert all(m["email"] != email for m in client.get("/api/v1/members", headers=bearer(owner.token)).json())
    events = client.get("/api/v1/audit", headers=bearer(owner.token), params={"action": "member_removed"}).json()["events"]
    assert events[0]["details"]["email"] == email and events[0]["user_email"] == owner.email


def test_the_members_page_invites_with_a_copyable_link_and_changes_roles(client, make_user):
    owner = make_user("owner")
    csrf = sign_in(client, owner.email, owner.password)
    page = client.get("/settings/members")
    assert page.status_code == 200 and owner.email in page.text
    email = f"page-{owner.id}@example.com"
    created = client.post("/settings/members/invite", data={"email": email, "role": "member", "csrf_token": csrf})
    assert created.status_code == 201
    link = re.search(r'id="invite-link" value="([^"]+)"', created.text).group(1)
    assert "/invite/inv_" in link and email in created.text
    invite_id = client.get("/api/v1/invites", headers=bearer(owner.token)).json()[0]["id"]
    assert client.post(f"/settings/invites/{invite_id}/revoke", data={"csrf_token": csrf}).status_code == 200
    assert client.get(_path(link)).status_code == 410
    # Without the CSRF token, nothing happens.
    assert client.post("/settings/members/invite", data={"email": "x@example.com", "role": "member"}).status_code == 403


def test_the_command_line_adds_people_with_a_role_and_records_tokens(make_user, monkeypatch, capsys, db):
    import io

    from app.cli import main
    from app.models import AuditEvent

    owner = make_user("owner")
    email = f"cli-{owner.id}@example.com"
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    assert main(["create-user", email, "--password-stdin", "--workspace-of", owner.email, "--role", "viewer"]) == 0
    joined = db.query(User).filter_by(email=email).one()
    assert (joined.role, joined.workspace_id) == ("viewer", db.get(User, owner.id).workspace_id)
    assert main(["create-token", email, "--name", "laptop"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("tlr_")
    event = db.query(AuditEvent).filter_by(user_id=joined.id, action="token_created").one()
    assert (event.user_agent, event.details) == ("tailor command line", {"name": "laptop", "via": "command line"})


def test_odd_input_gets_a_plain_message(client, make_user):
    owner = make_user("owner")
    member_id, _ = _join(client, owner, "member")
    odd = client.post("/api/v1/invites", headers=bearer(owner.token), json={"email": "a\x00b@example.com", "role": "viewer"})
    assert odd.status_code == 422 and odd.json()["detail"] == "Text may not contain NUL characters (field email)."  # app/http/nul_text.py
    bad_role = client.patch(f"/api/v1/members/{member_id}", headers=bearer(owner.token), json={"role": "root"})
    assert bad_role.status_code == 422 and "There is no role" in bad_role.json()["detail"]
    csrf = sign_in(client, owner.email, owner.password)
    page = client.post(f"/settings/members/{member_id}/role", data={"role": "root", "csrf_token": csrf})
    assert page.status_code == 422 and "There is no role" in page.text
    assert client.post("/settings/members/abc/role", data={"role": "viewer", "csrf_token": csrf}).status_code == 422
    assert client.get("/settings/audit", params={"page": "x"}).status_code == 422
    assert client.get("/settings/audit", params={"action": "nope"}).status_code == 422


def test_viewers_are_not_offered_what_they_may_not_do(client, make_user, db):
    from app.models import Job
    from tests.app.helpers import upload

    owner = make_user("owner")
    dataset = upload(client, owner.token, b"question,answer\nhi,hello\nbye,see you\n").json()
    job = Job(
        workspace_id=db.get(User, owner.id).workspace_id, dataset_id=dataset["id"], name="j", task="instruction",
        column_mapping={}, base_model="tiny-llama", technique="lora", params={}, status="queued",
    )  # fmt: skip
    db.add(job)
    db.commit()
    sign_in(client, owner.email, owner.password)
    offers = {f"/jobs/{job.id}": 'id="cancel-job"', f"/datasets/{dataset['id']}": 'id="start-training"', "/": "/datasets/new"}
    for path, offered in offers.items():
        assert offered in client.get(path).text, path
    _, email = _join(client, owner, "viewer")
    sign_in(client, email, PASSWORD)
    assert 'id="cancel-job"' not in client.get(f"/jobs/{job.id}").text
    dataset_page = client.get(f"/datasets/{dataset['id']}").text
    assert 'id="start-training"' not in dataset_page and 'id="train-readonly"' in dataset_page and "Delete dataset" not in dataset_page
    assert "/datasets/new" not in client.get("/").text and "/settings/members" not in client.get("/").text
    assert 'id="playground-readonly"' in client.get("/playground").text


def test_tokens_are_made_and_revoked_in_the_browser(client, make_user):
    owner = make_user("owner")
    csrf = sign_in(client, owner.email, owner.password)
    form = {"name": "build server", "scopes": ["serve", "manage"], "expires_days": "", "csrf_token": csrf}
    created = client.post("/settings/tokens", data=form)
    assert created.status_code == 200 and "build server" in created.text
    secret = re.search(r'id="new-token-secret">([^<]+)<', created.text).group(1)
    assert client.get("/api/v1/datasets", headers=bearer(secret)).status_code == 200
    listed = client.get("/api/v1/tokens", headers=bearer(secret)).json()
    made = next(t for t in listed if t["name"] == "build server")
    assert secret not in client.get("/settings/tokens").text  # shown once
    assert client.post(f"/settings/tokens/{made['id']}/revoke", data={"csrf_token": csrf}).status_code == 200
    assert client.get("/api/v1/datasets", headers=bearer(secret)).status_code == 401
    kept = next(t for t in listed if t["name"] != "build server")  # the owner's first token
    other = make_user("other")
    assert client.delete(f"/api/v1/tokens/{kept['id']}", headers=bearer(other.token)).status_code == 404
    assert client.get("/api/v1/datasets", headers=bearer(owner.token)).status_code == 200
    actions = [e["action"] for e in client.get("/api/v1/audit", headers=bearer(owner.token)).json()["events"]]
    assert actions[:2] == ["token_revoked", "token_created"]
