"""A NUL character (\\x00) in any text a user sends: PostgreSQL cannot store one in a text column,
so each would be a server error there. Table-driven: a NUL in each form field, JSON field, query
parameter and path of the routes that take text — never a 5xx, and (app/http/nul_text.py) a plain
refusal naming the field: 422 on pages and the API, OpenAI's 400 body on /v1. Upload file names
keep their own rule: control characters are dropped (tests/app/test_odd_input.py). Run on SQLite and on
PostgreSQL (TAILOR_TEST_DATABASE=postgresql)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.db import session_scope
from app.models import Dataset, User
from app.services.accounts import create_api_token
from tests.app.helpers import SAMPLE_CSV, bearer, upload
from tests.app.serving_helpers import install_base, make_adapter, scripted_engine

NUL = "a\x00b"


@dataclass(frozen=True)
class Case:
    method: str
    path: str  # {dataset}, {adapter}, {user}, {workspace} are filled from the world
    kind: str  # form | json | query | multipart | path
    data: dict[str, Any]
    field: str  # the field that carries the NUL
    anonymous: bool = False

    @property
    def id(self) -> str:
        return f"{self.method} {self.path} {self.kind}:{self.field}"


def _form(method, path, data, field, **kw):
    return Case(method, path, "form", data, field, **kw)


def _json(method, path, data, field, **kw):
    return Case(method, path, "json", data, field, **kw)


def _query(path, data, field, **kw):
    return Case("GET", path, "query", data, field, **kw)


JOB = {
    "dataset_id": "{dataset}",
    "base_model": "tiny-llama",
    "technique": "lora",
    "column_mapping": {"prompt": "question", "response": "answer"},
}
PASSWORDS = {"current_password": "correct horse battery", "new_password": "another long one"}
CORRECTION = {"prompt": "Hi", "answer": "Hello", "correction": "Hello there", "target": "base"}
CHAT = {"model": "{slug}", "messages": [{"role": "user", "content": "Hi"}]}

CASES = [
    # --- pages (forms) ---
    _form("POST", "/login", {"email": "x@example.com", "password": "pw", "next": "/"}, "email", anonymous=True),
    _form("POST", "/login", {"email": "x@example.com", "password": "pw", "next": "/"}, "password", anonymous=True),
    _form("POST", "/login", {"email": "x@example.com", "password": "pw", "next": "/"}, "next", anonymous=True),
    _form("POST", "/account/password", PASSWORDS, "new_password"),
    _form("POST", "/account/password", PASSWORDS, "current_password"),
    _form("POST", "/settings/tokens", {"name": "ci", "scopes": "serve"}, "name"),
    _form("POST", "/settings/tokens", {"name": "ci", "scopes": "serve"}, "scopes"),
    _form("POST", "/settings/members/invite", {"email": "new@example.com", "role": "member"}, "email"),
    _form("POST", "/settings/members/invite", {"email": "new@example.com", "role": "member"}, "role"),
    _form("POST", "/settings/members/{user}/role", {"role": "member"}, "role"),
    _form("POST", "/corrections", CORRECTION, "prompt"),
    _form("POST", "/corrections", CORRECTION, "answer"),
    _form("POST", "/corrections", CORRECTION, "correction"),
    _form("POST", "/corrections", CORRECTION, "target"),
    _form("POST", "/playground", {"prompt": "Hi", "include_base": "on", "max_new_tokens": "8"}, "prompt"),
    _form("POST", "/jobs", {"dataset_id": "{dataset}", "base_model": "tiny-llama", "technique": "lora", "name": "x"}, "name"),
    _form("POST", "/jobs", {"dataset_id": "{dataset}", "base_model": "tiny-llama", "technique": "lora"}, "base_model"),
    _form("POST", "/jobs", {"dataset_id": "{dataset}", "base_model": "tiny-llama", "technique": "lora", "col_prompt": "q"}, "col_prompt"),
    _form("POST", "/jobs/estimate", {"dataset_id": "{dataset}", "base_model": "tiny-llama", "technique": "lora"}, "technique"),
    _form("POST", "/jobs/preview", {"dataset_id": "{dataset}", "base_model": "tiny-llama", "technique": "lora"}, "base_model"),
    _form("POST", "/adapters/{adapter}/status", {"status": "approved"}, "status"),
    _form("POST", "/adapters/{adapter}/request-log", {"enabled": "on", "retention_days": "30"}, "retention_days"),
    _form("POST", "/preference-datasets/votes", {"ids": "{adapter}", "scope": "all"}, "scope"),
    _form("POST", "/review/nope", {"choice": "left", "ids": "{adapter}"}, "choice"),
    _form("POST", "/admin/quotas/{workspace}", {"max_queued_jobs": "5"}, "max_queued_jobs"),
    _form("POST", "/datasets/{dataset}/personal-data", {"mask": "on"}, "mask"),
    Case("POST", "/datasets", "multipart", {"sheet": "x"}, "sheet"),
    Case("POST", "/api/v1/datasets", "multipart", {"sheet": "x"}, "sheet"),
    Case("POST", "/corrections", "multipart", CORRECTION, "correction"),
    # --- the API (JSON) ---
    _json("POST", "/api/v1/tokens", {"name": "ci", "scopes": ["serve"]}, "name"),
    _json("POST", "/api/v1/invites", {"email": "new@example.com", "role": "member"}, "email"),
    _json("PATCH", "/api/v1/members/{user}", {"role": "member"}, "role"),
    _json("POST", "/api/v1/account/password", {"current_password": "correct horse battery", "new_password": "x" * 20}, "new_password"),
    _json("POST", "/api/v1/jobs", {**JOB, "name": "x"}, "name"),
    _json("POST", "/api/v1/jobs", JOB, "base_model"),
    _json("POST", "/api/v1/jobs", {**JOB, "column_mapping": {"prompt": "question", "response": NUL}}, "column_mapping.response"),
    _json("POST", "/api/v1/jobs", {**JOB, "params": {"epochs": NUL}}, "params.epochs"),
    _json("POST", "/api/v1/jobs/preview", JOB, "task"),
    _json("POST", "/api/v1/bakeoffs", {**JOB, "techniques": ["lora"]}, "preset"),
    _json("POST", "/api/v1/corrections", CORRECTION, "prompt"),
    _json("POST", "/api/v1/corrections", CORRECTION, "correction"),
    _json("POST", "/api/v1/playground", {"prompt": "Hi", "include_base": True}, "prompt"),
    _json("POST", "/api/v1/review/nope", {"choice": "left"}, "choice"),
    _json("PATCH", "/api/v1/adapters/{adapter}", {"status": "approved"}, "status"),
    # --- query strings and paths ---
    _query("/datasets/{dataset}/rows", {"q": "x"}, "q"),
    _query("/api/v1/datasets/{dataset}/rows", {"q": "x"}, "q"),
    _query("/api/v1/datasets/{dataset}/labels", {"column": "x"}, "column"),
    _query("/api/v1/datasets/{dataset}/split-check", {"task": "instruction", "prompt": "question"}, "prompt"),
    _query("/api/v1/datasets/{dataset}/token-lengths", {"base_model": "tiny-llama"}, "base_model"),
    _query("/api/v1/audit", {"email": "x"}, "email"),
    _query("/settings/audit", {"who": "x"}, "who"),
    _query("/login", {"next": "/"}, "next", anonymous=True),
    Case("POST", "/api/v1/review/a%00b", "path", {"choice": "left"}, "path"),
    Case("GET", "/v1/models/a%00b", "path", {}, "path"),
    # --- /v1 (OpenAI's format) ---
    _json("POST", "/v1/chat/completions", CHAT, "model"),
    _json("POST", "/v1/chat/completions", {**CHAT, "messages": [{"role": "user", "content": NUL}]}, "messages.0.content"),
    _json("POST", "/v1/completions", {"model": "{slug}", "prompt": "Hi", "stop": ["x"]}, "stop.0"),
]


def _set(data: Any, dotted: str, value: str) -> Any:
    """A copy of data with the field at the dotted path set to value (a field not there is added)."""
    data = json.loads(json.dumps(data))
    target, *_ = data, None
    parts = dotted.split(".")
    for part in parts[:-1]:
        target = target[int(part)] if isinstance(target, list) else target[part]
    last = parts[-1]
    if isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value
    return data


def _fill(value: Any, world: dict[str, Any]) -> Any:
    if isinstance(value, str):
        for key, replacement in world.items():
            if value == "{" + key + "}" and key == "dataset":
                return replacement
            value = value.replace("{" + key + "}", str(replacement))
        return value
    if isinstance(value, dict):
        return {k: _fill(v, world) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, world) for v in value]
    return value


@pytest.fixture
def raw_client():
    from app.main import app

    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def world(raw_client, make_user, tiny_model_dir):
    install_base()
    user = make_user("nul")
    other = make_user("nul-member")
    dataset = upload(raw_client, user.token, SAMPLE_CSV.read_bytes()).json()
    adapter_id, slug = make_adapter(user.id)
    with session_scope() as db:
        me = db.get(User, user.id)
        assert me is not None
        me.is_admin = True
        member = db.get(User, other.id)
        assert member is not None and db.get(Dataset, dataset["id"]) is not None
        member.workspace_id, member.role = me.workspace_id, "member"
        workspace = me.workspace_id
        serve_token = create_api_token(db, me, "serve", scopes=("serve",))
    return {
        "user": other.id,
        "dataset": dataset["id"],
        "adapter": adapter_id,
        "slug": slug,
        "workspace": workspace,
        "token": user.token,
        "serve_token": serve_token,
    }


def _send(client: TestClient, case: Case, world: dict[str, Any], value: str):
    path = _fill(case.path, world)
    data = _fill(case.data, world)
    token = world["serve_token"] if case.path.startswith("/v1/") else world["token"]
    headers = {} if case.anonymous else bearer(token)
    if case.kind == "path":
        return client.request(case.method, path, headers=headers, json=data or None)
    if case.kind == "query":
        return client.get(path, headers=headers, params=_set(data, case.field, value))
    if case.kind == "json":
        return client.request(case.method, path, headers=headers, json=_set(data, case.field, value))
    if case.kind == "multipart":
        files = {"file": ("data.csv", SAMPLE_CSV.read_bytes(), "text/csv")}
        return client.post(path, headers=headers, data=_set(data, case.field, value), files=files)
    return client.request(case.method, path, headers=headers, data=_set(data, case.field, value))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_a_nul_in_any_text_is_a_plain_refusal_naming_the_field(raw_client, world, case):
    with scripted_engine():
        response = _send(raw_client, case, world, NUL)
    assert response.status_code < 500, (case.id, response.status_code, response.text[:300])
    expected = 400 if case.path.startswith("/v1/") else 422
    assert response.status_code == expected, (case.id, response.status_code, response.text[:300])
    assert "may not contain NUL characters" in response.text and "Traceback" not in response.text
    name = "the address" if case.kind == "path" else case.field
    assert f"({name})" in response.text or f"(field {name})" in response.text, response.text[:300]
    if case.path.startswith("/v1/"):
        assert set(response.json()) == {"error"} and response.json()["error"]["code"] == "invalid_value"
    elif case.path.startswith("/api/"):
        assert set(response.json()) == {"detail"}


def test_the_same_requests_without_a_nul_are_not_refused_for_it(raw_client, world):
    """The check refuses only the NUL: the same fields with plain text are not refused by it."""
    with scripted_engine():
        for case in CASES:
            if case.kind == "path":
                continue
            response = _send(raw_client, case, world, "plain")
            assert response.status_code < 500, (case.id, response.status_code, response.text[:300])
            assert "NUL" not in response.text, case.id


def test_an_escaped_backslash_u0000_is_text_not_a_nul(raw_client, world):
    body = {"name": "backslash \\u0000 is fine", "scopes": ["serve"]}
    response = raw_client.post("/api/v1/tokens", headers=bearer(world["token"]), json=body)
    assert response.status_code in (200, 201), response.text[:300]


def test_a_nul_deep_in_a_json_body_nested_too_far_to_read_is_no_server_error(raw_client, world):
    depth = 100_000
    body = "[" * depth + '"\\u0000"' + "]" * depth  # the JSON escape of a NUL, 100,000 lists deep
    response = raw_client.post("/api/v1/tokens", headers={**bearer(world["token"]), "Content-Type": "application/json"}, content=body)
    assert 400 <= response.status_code < 500, response.text[:300]
