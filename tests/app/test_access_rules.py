"""The access rules, route by route: every route of the app has a rule in app/http/access.py (a new
route without one fails here), and for every route each kind of person gets what the rule says —
viewer, member, owner and instance administrator of workspace A, the owner of workspace B (404 for
A's rows), and nobody signed in (401 / the sign-in page).

Same-workspace requests use ids that do not exist, so an allowed request reaches the route's own
lookup (a 404, a 422 for a missing body …) and changes nothing; a refused one is a 403 from the
access check. Workspace B's owner uses A's real ids."""

from __future__ import annotations

import re
import uuid

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.testclient import TestClient

from app.domain.roles import ADMIN, allows
from app.http.access import PUBLIC, RULES, rule_for
from app.main import app
from tests.app.helpers import bearer
from tests.conftest import csrf_from


def _app_routes() -> list[tuple[str, str]]:
    found = set()
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        if isinstance(route, APIRoute):
            for method in route.methods or ():
                if method != "HEAD":
                    found.add((method, context.path))
    return sorted(found)


ROUTES = _app_routes()
PRINCIPALS = ("viewer", "member", "owner", "admin", "other_owner", "anonymous")
UNKNOWN = {"int": "987654321", "str": "no-such-thing"}
# Valid bodies where a route validates one before its lookup could answer 404.
BODIES = {
    ("POST", "/api/v1/review/{token}"): {"choice": "left"},
    ("PATCH", "/api/v1/adapters/{adapter_id}"): {"status": "approved"},
    ("POST", "/api/v1/datasets/{dataset_id}/personal-data"): {"mask": True},
    ("PATCH", "/api/v1/members/{user_id}"): {"role": "member"},
    ("PATCH", "/api/v1/admin/workspaces/{workspace_id}/members/{user_id}"): {"role": "member"},
}


def test_every_route_has_an_access_rule_and_every_rule_a_route():
    missing = [f"{m} {p}" for m, p in ROUTES if rule_for(m, p) is None]
    assert not missing, f"Routes without an access rule in app/http/access.py: {missing}"
    stale = [f"{m} {p}" for m, p in RULES if (m, p) not in set(ROUTES)]
    assert not stale, f"Rules for routes that do not exist: {stale}"
    assert len(ROUTES) > 90


def test_a_route_without_a_rule_is_refused():
    from app.http.deps import Authorized

    probe = FastAPI(dependencies=[Authorized])

    @probe.get("/not-in-the-table")
    def unlisted():
        return {"reached": True}

    response = TestClient(probe).get("/not-in-the-table")
    assert response.status_code == 403 and "no access rule" in response.json()["detail"]


@pytest.fixture(scope="module")
def world():
    """Workspace A with an owner, a member, a viewer and an administrator (role viewer, so only the
    flag lets them through), rows of A's, and workspace B with its owner."""
    from sqlalchemy import select

    from app.db import session_scope
    from app.models import Adapter, ApiToken, Dataset, Job, ReviewItem
    from app.services import members
    from app.services.accounts import create_api_token, create_user

    tag = uuid.uuid4().hex[:8]
    tokens = {}
    with session_scope() as db:
        owner = create_user(db, f"owner-{tag}@a.example", "correct horse battery")
        workspace = owner.workspace
        people = {
            "owner": owner,
            "member": create_user(db, f"member-{tag}@a.example", "correct horse battery", workspace=workspace, role="member"),
            "viewer": create_user(db, f"viewer-{tag}@a.example", "correct horse battery", workspace=workspace, role="viewer"),
            "admin": create_user(db, f"admin-{tag}@a.example", "correct horse battery", workspace=workspace, role="viewer", is_admin=True),
            "other_owner": create_user(db, f"owner-{tag}@b.example", "correct horse battery"),
        }
        for name, user in people.items():
            tokens[name] = create_api_token(db, user, name="access-test")
        ws = workspace.id
        dataset = Dataset(
            workspace_id=ws, name="a", original_filename="a.csv", sha256="0" * 64, size_bytes=1, row_count=1,
            columns=["q"], encoding="utf-8", delimiter=",", storage_key="nowhere",
        )  # fmt: skip
        db.add(dataset)
        db.flush()
        job = Job(
            workspace_id=ws, dataset_id=dataset.id, name="j", task="instruction", column_mapping={}, base_model="tiny-llama",
            technique="lora", params={}, status="succeeded", group_id=f"g{tag}",
        )  # fmt: skip
        db.add(job)
        db.flush()
        adapter = Adapter(workspace_id=ws, job_id=job.id, name="ad", technique="lora", base_model="tiny-llama", storage_key="nowhere")
        review = ReviewItem(
            token=f"r{tag}", workspace_id=ws, left_target="base", right_target="base", prompt="p", left_answer="l", right_answer="r"
        )
        db.add_all([adapter, review])
        invite = members.create_invite(db, ws, owner, f"new-{tag}@a.example", "viewer", 1)
        db.flush()
        token_id = db.scalar(select(ApiToken.id).where(ApiToken.user_id == owner.id))
        ids = {
            "dataset_id": dataset.id,
            "job_id": job.id,
            "adapter_id": adapter.id,
            "group_id": job.group_id,
            "request_id": uuid.uuid4().hex,  # playground requests live in Redis; an unknown one is as good
            "token": review.token,
            "invite_id": invite.invite.id,
            "user_id": people["viewer"].id,
            "token_id": token_id,
            "workspace_id": ws,
        }
    with TestClient(app) as client:
        anonymous = TestClient(app)
        anonymous_csrf = csrf_from(anonymous.get("/login").text)
        yield {"client": client, "anonymous": anonymous, "anonymous_csrf": anonymous_csrf, "tokens": tokens, "ids": ids}
        anonymous.close()


def _fill(path: str, values: dict) -> str:
    return re.sub(r"{([^}]+)}", lambda m: str(values.get(m.group(1), UNKNOWN["int"])), path)


def _unknown(path: str) -> str:
    string_params = {"group_id", "request_id", "token"}
    return re.sub(r"{([^}]+)}", lambda m: UNKNOWN["str" if m.group(1) in string_params else "int"], path)


def _expected(rule: str, principal: str, has_params: bool) -> str:
    if rule == PUBLIC:
        return "open"
    if principal == "anonymous":
        return "sign-in"
    if principal == "other_owner":
        if rule == ADMIN:  # instance administration (quotas): refused before any lookup
            return "403"
        return "404" if has_params else "allowed"
    role = {"admin": "viewer"}.get(principal, principal)
    return "allowed" if allows(role, principal == "admin", rule) else "403"


def _to_sign_in(response) -> bool:
    return response.status_code == 303 and response.headers.get("location", "").startswith("/login")


def _outcome_ok(expected: str, response, path: str) -> bool:
    status = response.status_code
    if expected == "open":  # the route itself answers (the sign-in form may say 401, logout sends to /login)
        return status != 403 and status < 500
    if expected == "sign-in":
        return status == 401 if path.startswith("/api/") or path == "/openapi.json" else _to_sign_in(response)
    if expected == "allowed":
        return status not in (401, 403) and not _to_sign_in(response) and status < 500
    if expected == "403":
        return status == 403 and "your role in this workspace" in response.text
    return status == 404


@pytest.mark.parametrize("method, path", ROUTES, ids=[f"{m} {p}" for m, p in ROUTES])
def test_each_person_gets_what_the_rule_says(world, method, path):
    rule = rule_for(method, path)
    if rule is None:
        pytest.fail(f"{method} {path} has no access rule in app/http/access.py")
    has_params = "{" in path
    wrong = []
    for principal in PRINCIPALS:
        expected = _expected(rule, principal, has_params)
        if principal == "anonymous":
            client, headers = world["anonymous"], {"X-CSRF-Token": world["anonymous_csrf"]}
        else:
            client, headers = world["client"], bearer(world["tokens"][principal])
        target = _fill(path, world["ids"]) if principal == "other_owner" else _unknown(path)
        response = client.request(method, target, headers=headers, json=BODIES.get((method, path)), follow_redirects=False)
        if not _outcome_ok(expected, response, path):
            wrong.append(f"{principal}: expected {expected}, got {response.status_code} {response.text[:160]!r}")
    assert not wrong, f"{method} {path} (rule {rule}):\n" + "\n".join(wrong)
