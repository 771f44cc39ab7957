"""Serving in the browser and the management API: the tokens page (CSRF, secret shown once, revoke),
the adapter page's Use it panel, the request log (its CSV uploads back as a dataset), usage
aggregation, and the vLLM chunk reader."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

from app.db import session_scope
from app.models import Adapter, ApiToken, ServingLogEntry, ServingUsage, User, utcnow
from app.services.serving_usage import percentile, usage_summary
from app.services.serving_vllm import events_from_sse
from tests.app.helpers import bearer
from tests.app.serving_helpers import install_base, make_adapter, scripted_engine
from tests.conftest import sign_in


def test_the_tokens_page_creates_with_csrf_shows_the_secret_once_and_revokes(client, make_user):
    user = make_user()
    csrf = sign_in(client, user.email, user.password)
    refused = client.post("/settings/tokens", data={"name": "desk", "scopes": ["serve"], "expires_days": "30"})
    assert refused.status_code == 403
    created = client.post("/settings/tokens", data={"name": "desk", "scopes": ["serve"], "expires_days": "30", "csrf_token": csrf})
    assert created.status_code == 200 and 'id="new-token-secret"' in created.text
    secret = created.text.split('id="new-token-secret">')[1].split("<")[0]
    assert secret.startswith("tlr_")
    page = client.get("/settings/tokens").text
    assert secret not in page and "desk" in page
    with session_scope() as db:
        row = db.query(ApiToken).filter_by(user_id=user.id, name="desk").one()
        assert row.scopes == "serve" and row.expires_at is not None and secret not in row.token_hash
        token_id = row.id
    assert client.get("/v1/models", headers=bearer(secret)).status_code == 200
    assert client.post(f"/settings/tokens/{token_id}/revoke", data={}).status_code == 403  # no CSRF token
    assert client.post(f"/settings/tokens/{token_id}/revoke", data={"csrf_token": csrf}).status_code == 200
    assert client.get("/v1/models", headers=bearer(secret)).status_code == 401


def test_token_form_mistakes_are_plain_422s_and_other_users_tokens_404(client, make_user):
    user, other = make_user(), make_user()
    csrf = sign_in(client, user.email, user.password)
    for data, words in (
        ({"name": "", "scopes": ["serve"]}, "Name the token"),
        ({"name": "x", "scopes": []}, "at least one scope"),
        ({"name": "x", "scopes": ["admin"]}, "Unknown scope"),
        ({"name": "x", "scopes": ["serve"], "expires_days": "soon"}, "whole number"),
        ({"name": "x", "scopes": ["serve"], "expires_days": "0"}, "between 1"),
    ):
        response = client.post("/settings/tokens", data={**data, "csrf_token": csrf})
        assert response.status_code == 422 and words in response.text, data
    with session_scope() as db:
        theirs = db.query(ApiToken).filter_by(user_id=other.id).first().id
    assert client.post(f"/tokens/{theirs}/revoke", data={"csrf_token": csrf}).status_code == 404
    assert client.delete(f"/api/v1/tokens/{theirs}", headers=bearer(user.token)).status_code == 404
    assert client.post("/api/v1/tokens", headers=bearer(user.token), json={"name": "x", "scopes": ["root"]}).status_code == 422


def test_the_cli_creates_scoped_expiring_tokens(make_user, capsys):
    from app.cli import main

    user = make_user()
    assert main(["create-token", user.email, "--name", "ci", "--scope", "serve", "--expires-days", "7"]) == 0
    secret = capsys.readouterr().out.strip()
    with session_scope() as db:
        row = db.query(ApiToken).filter_by(user_id=user.id, name="ci").one()
        assert row.scopes == "serve" and row.expires_at is not None and secret.startswith("tlr_")
    assert main(["create-token", user.email]) == 0
    with session_scope() as db:
        assert db.query(ApiToken).filter_by(user_id=user.id, name="cli").order_by(ApiToken.id.desc()).first().scopes == "serve manage"


def test_the_adapter_page_has_the_use_it_panel_and_other_workspaces_get_404(client, make_user):
    install_base()
    user, other = make_user(), make_user()
    adapter_id, slug = make_adapter(user.id, status="draft")
    sign_in(client, user.email, user.password)
    page = client.get(f"/adapters/{adapter_id}")
    assert page.status_code == 200
    assert f'id="use-it-model">{slug}<' in page.text and "http://testserver/v1" in page.text
    assert "from openai import OpenAI" in page.text and "curl http://testserver/v1/chat/completions" in page.text
    assert 'id="not-served"' in page.text  # a draft is not served yet
    assert client.get(f"/api/v1/adapters/{adapter_id}/serving", headers=bearer(user.token)).json()["model"] == slug
    theirs, _ = make_adapter(other.id)
    assert client.get(f"/adapters/{theirs}").status_code == 404
    assert client.get(f"/adapters/{theirs}/request-log.csv").status_code == 404
    assert client.get(f"/api/v1/adapters/{theirs}/request-log", headers=bearer(user.token)).status_code == 404


def test_the_request_log_keeps_prompts_and_answers_and_its_csv_uploads_as_a_dataset(client, make_user):
    install_base()
    user = make_user()
    adapter_id, slug = make_adapter(user.id)
    csrf = sign_in(client, user.email, user.password)
    chat = {"model": slug, "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Where is my order?"}]}
    with scripted_engine():
        assert client.post("/v1/chat/completions", headers=bearer(user.token), json=chat).status_code == 200  # log off: nothing kept
        assert (
            client.post(
                f"/adapters/{adapter_id}/request-log", data={"enabled": "on", "retention_days": "7", "csrf_token": csrf}
            ).status_code
            == 200
        )
        for _ in range(3):
            assert client.post("/v1/chat/completions", headers=bearer(user.token), json=chat).status_code == 200
        client.post("/v1/completions", headers=bearer(user.token), json={"model": slug, "prompt": "=cmd|' /C calc'!A0"})
    with session_scope() as db:  # an entry past the retention goes at the next write
        db.add(
            ServingLogEntry(
                workspace_id=db.get(User, user.id).workspace_id,
                adapter_id=adapter_id,
                prompt="old",
                answer="old",
                created_at=utcnow() - timedelta(days=8),
            )
        )
    with scripted_engine():
        client.post("/v1/chat/completions", headers=bearer(user.token), json=chat)
    entries = client.get(f"/api/v1/adapters/{adapter_id}/request-log", headers=bearer(user.token)).json()
    assert len(entries) == 5 and "old" not in [e["prompt"] for e in entries]
    assert entries[-1] == {**entries[-1], "prompt": "Where is my order?", "answer": "Hello world"}
    assert "Where is my order?" in client.get(f"/adapters/{adapter_id}").text
    exported = client.get(f"/adapters/{adapter_id}/request-log.csv")
    rows = list(csv.reader(io.StringIO(exported.text)))
    assert rows[0] == ["prompt", "answer"] and len(rows) == 6 and rows[4][0].startswith("'=")  # formulas neutralised
    uploaded = client.post("/api/v1/datasets", headers=bearer(user.token), files={"file": ("log.csv", exported.content, "text/csv")})
    assert uploaded.status_code == 201, uploaded.text
    assert uploaded.json()["row_count"] == 5 and [c["name"] for c in uploaded.json()["profile"]["columns"]] == ["prompt", "answer"]
    bad = client.post(f"/adapters/{adapter_id}/request-log", data={"enabled": "on", "retention_days": "forever", "csrf_token": csrf})
    assert bad.status_code == 422 and "whole number" in bad.text


def test_usage_is_summed_per_model_and_day_with_latency_percentiles(make_user):
    user = make_user()
    adapter_id, slug = make_adapter(user.id, name="usage one")
    now = utcnow()
    with session_scope() as db:
        workspace_id = db.get(User, user.id).workspace_id
        for i, latency in enumerate([100, 200, 300, 400, 1000]):
            db.add(
                ServingUsage(
                    workspace_id=workspace_id,
                    adapter_id=adapter_id,
                    model=slug,
                    base_model="b",
                    endpoint="chat.completions",
                    prompt_tokens=10,
                    completion_tokens=i,
                    latency_ms=latency,
                    first_token_ms=50,
                    status=200,
                    created_at=now,
                )
            )
        db.add(
            ServingUsage(
                workspace_id=workspace_id,
                adapter_id=adapter_id,
                model=slug,
                base_model="b",
                endpoint="chat.completions",
                prompt_tokens=0,
                completion_tokens=0,
                latency_ms=5,
                status=503,
                created_at=now,
            )
        )
        db.add(
            ServingUsage(
                workspace_id=workspace_id,
                adapter_id=adapter_id,
                model=slug,
                base_model="b",
                endpoint="chat.completions",
                prompt_tokens=7,
                completion_tokens=7,
                latency_ms=5,
                status=200,
                created_at=now - timedelta(days=1),
            )
        )
        db.flush()
        today, yesterday = usage_summary(db, workspace_id, 7, now=now)
    assert (today["requests"], today["errors"], today["prompt_tokens"], today["completion_tokens"]) == (6, 1, 50, 10)
    assert (today["latency_p50_ms"], today["latency_p95_ms"], today["first_token_p50_ms"]) == (300, 1000, 50)
    assert today["adapter_name"] == "usage one" and yesterday["requests"] == 1
    assert percentile([1, 2, 3, 4], 0.5) == 2 and percentile(list(range(1, 21)), 0.95) == 19 and percentile([], 0.5) is None


def test_the_usage_page_and_api_are_scoped_to_the_workspace(client, make_user):
    user, other = make_user(), make_user()
    _, slug = make_adapter(other.id, name="their usage")
    with session_scope() as db:
        db.add(
            ServingUsage(workspace_id=db.get(User, other.id).workspace_id, model=slug, base_model="b", endpoint="completions", status=200)
        )
    assert slug in str(client.get("/api/v1/usage", headers=bearer(other.token)).json())
    assert slug not in str(client.get("/api/v1/usage", headers=bearer(user.token)).json())
    sign_in(client, user.email, user.password)
    assert client.get("/usage").status_code == 200 and slug not in client.get("/usage").text
    assert client.get("/api/v1/usage?days=0", headers=bearer(user.token)).status_code == 422


def test_adapter_names_are_readable_stable_and_unique_in_the_workspace(make_user):
    user = make_user()
    first_id, first = make_adapter(user.id, name="northwind_support · LoRA")
    assert first == f"northwind-support-lora-{first_id}"
    with session_scope() as db:
        adapter = db.get(Adapter, first_id)
        adapter.name = "renamed"
        from app.services.serving import assign_slug

        assert assign_slug(db, adapter) == first  # never changes once given


def test_vllm_chunks_become_serve_events():
    lines = [
        'data: {"id":"c","object":"chat.completion.chunk",'
        '"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}',
        "",
        'data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}]}',
        'data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":"length"}]}',
        'data: {"id":"c","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":4,"completion_tokens":2,"total_tokens":6}}',
        "data: [DONE]",
    ]
    events = events_from_sse(lines)
    assert [e.type for e in events] == ["start", "token", "token", "done"]
    assert "".join(e.text for e in events) == "Hello"
    assert (events[-1].prompt_tokens, events[-1].completion_tokens, events[-1].finish_reason) == (4, 2, "length")
    completion = events_from_sse(['data: {"choices":[{"index":0,"text":"Hi","finish_reason":"stop"}]}', "data: [DONE]"])
    assert [(e.type, e.text) for e in completion][:2] == [("start", ""), ("token", "Hi")]
    failed = events_from_sse(['data: {"error": {"message": "boom", "code": 500}}'])
    assert failed[-1].type == "error" and failed[-1].message == "boom"
