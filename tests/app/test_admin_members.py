"""Instance administrators manage any workspace's people (/admin/workspaces and
/api/v1/admin/workspaces): list its members, change roles, disable and enable — with the rules
owners have (the last active owner stays, nobody disables themselves), each change in that
workspace's audit log. Non-administrators are refused (403; the table-driven test in
test_access_rules.py covers every route and person)."""

from __future__ import annotations

import uuid

import pytest

from app.db import session_scope
from app.models import User
from app.services.accounts import create_api_token, create_user
from tests.app.helpers import bearer
from tests.conftest import sign_in

PASSWORD = "correct horse battery"


@pytest.fixture
def admin():
    """An instance administrator in a workspace of their own, with an API token."""
    email = f"admin-{uuid.uuid4().hex[:8]}@example.com"
    with session_scope() as db:
        user = create_user(db, email, PASSWORD, is_admin=True)
        return {"id": user.id, "email": email, "token": create_api_token(db, user)}


@pytest.fixture
def team():
    """Another workspace: its one owner and a member (with API tokens)."""
    tag = uuid.uuid4().hex[:8]
    with session_scope() as db:
        owner = create_user(db, f"owner-{tag}@team.example", PASSWORD)
        member = create_user(db, f"member-{tag}@team.example", PASSWORD, workspace=owner.workspace, role="member")
        return {
            "workspace_id": owner.workspace_id,
            "owner": {"id": owner.id, "email": owner.email, "token": create_api_token(db, owner)},
            "member": {"id": member.id, "email": member.email, "token": create_api_token(db, member)},
        }


def _patch(client, admin, team, user_id, **body):
    return client.patch(f"/api/v1/admin/workspaces/{team['workspace_id']}/members/{user_id}", headers=bearer(admin["token"]), json=body)


def test_an_administrator_lists_any_workspace_and_its_members_through_the_api(client, admin, team):
    workspaces = client.get("/api/v1/admin/workspaces", headers=bearer(admin["token"]))
    assert workspaces.status_code == 200
    mine = next(w for w in workspaces.json() if w["id"] == team["workspace_id"])
    assert (mine["members"], mine["active_owners"], mine["disabled"]) == (2, 1, 0)
    listed = client.get(f"/api/v1/admin/workspaces/{team['workspace_id']}/members", headers=bearer(admin["token"]))
    assert listed.status_code == 200
    assert {(m["email"], m["role"]) for m in listed.json()} == {(team["owner"]["email"], "owner"), (team["member"]["email"], "member")}
    # Not for the workspace's own owner, nor for anyone else who is not an administrator.
    for token in (team["owner"]["token"], team["member"]["token"]):
        assert client.get(f"/api/v1/admin/workspaces/{team['workspace_id']}/members", headers=bearer(token)).status_code == 403
        assert _patch(client, {"token": token}, team, team["member"]["id"], role="owner").status_code == 403
    assert client.get("/api/v1/admin/workspaces/987654321/members", headers=bearer(admin["token"])).status_code == 404


def test_an_administrator_changes_roles_and_access_with_the_owners_rules_and_it_is_audited(client, admin, team):
    member_id, owner_id = team["member"]["id"], team["owner"]["id"]
    promoted = _patch(client, admin, team, member_id, role="owner")
    assert promoted.status_code == 200 and promoted.json()["role"] == "owner"
    disabled = _patch(client, admin, team, member_id, disabled=True)
    assert disabled.status_code == 200 and disabled.json()["disabled_at"] is not None
    assert client.get("/api/v1/datasets", headers=bearer(team["member"]["token"])).status_code == 401  # their token stops working
    # The last active owner: neither demoted nor disabled.
    last = _patch(client, admin, team, owner_id, role="viewer")
    assert last.status_code == 409 and "last owner" in last.json()["detail"]
    assert _patch(client, admin, team, owner_id, disabled=True).status_code == 409
    enabled = _patch(client, admin, team, member_id, disabled=False)
    assert enabled.status_code == 200 and enabled.json()["disabled_at"] is None
    assert client.get("/api/v1/datasets", headers=bearer(team["member"]["token"])).status_code == 200
    assert _patch(client, admin, team, owner_id, role="viewer").status_code == 200  # now another owner is active
    # Bad input is a plain 4xx; a user of another workspace is not found here.
    bad = _patch(client, admin, team, member_id, role="superuser")
    assert bad.status_code == 422 and "There is no role 'superuser'" in bad.json()["detail"]
    assert _patch(client, admin, team, admin["id"], role="owner").status_code == 404

    # The workspace's (new) owner reads every change in its audit log: the administrator did it.
    events = client.get("/api/v1/audit", headers=bearer(team["member"]["token"]), params={"user_id": admin["id"]})
    assert events.status_code == 200
    actions = [(e["action"], e["target_id"], e["user_email"]) for e in events.json()["events"]]
    assert ("role_changed", str(member_id), admin["email"]) in actions
    assert ("member_disabled", str(member_id), admin["email"]) in actions
    assert ("member_enabled", str(member_id), admin["email"]) in actions
    assert ("role_changed", str(owner_id), admin["email"]) in actions


def test_the_admin_pages_list_workspaces_and_change_a_members_role(client, admin, team):
    ws, member_id, owner_id = team["workspace_id"], team["member"]["id"], team["owner"]["id"]
    csrf = sign_in(client, admin["email"], PASSWORD)
    overview = client.get("/admin/workspaces")
    assert overview.status_code == 200 and f'href="/admin/workspaces/{ws}/members"' in overview.text
    assert 'href="/admin/workspaces"' in overview.text  # in the navigation
    page = client.get(f"/admin/workspaces/{ws}/members")
    assert page.status_code == 200 and team["member"]["email"] in page.text
    assert f'action="/admin/workspaces/{ws}/members/{member_id}/role"' in page.text and "Invite a colleague" not in page.text

    changed = client.post(f"/admin/workspaces/{ws}/members/{member_id}/role", data={"csrf_token": csrf, "role": "viewer"})
    assert changed.status_code == 200 and changed.url.path == f"/admin/workspaces/{ws}/members"
    disabled = client.post(f"/admin/workspaces/{ws}/members/{member_id}/disable", data={"csrf_token": csrf})
    assert disabled.status_code == 200
    with session_scope() as db:
        member = db.get(User, member_id)
        assert member.role == "viewer" and member.disabled_at is not None
    assert client.post(f"/admin/workspaces/{ws}/members/{member_id}/enable", data={"csrf_token": csrf}).status_code == 200
    refused = client.post(f"/admin/workspaces/{ws}/members/{owner_id}/disable", data={"csrf_token": csrf})
    assert refused.status_code == 409 and "last owner" in refused.text and "Traceback" not in refused.text
    assert client.post(f"/admin/workspaces/{ws}/members/{member_id}/role", data={"role": "owner"}).status_code == 403  # no CSRF token
    assert client.get("/admin/workspaces/987654321/members").status_code == 404
    assert client.post(f"/admin/workspaces/{ws}/members/987654321/role", data={"csrf_token": csrf, "role": "owner"}).status_code == 404

    client.post("/logout", data={"csrf_token": csrf})
    sign_in(client, team["owner"]["email"], PASSWORD)  # the workspace's own owner has no admin pages
    assert client.get("/admin/workspaces").status_code == 403
    assert client.get(f"/admin/workspaces/{ws}/members").status_code == 403
