"""The /v1 endpoint's web side: OpenAI's formats (whole and streamed), every 4xx in OpenAI's error
body, token scopes, model scoping, limits and the 503 without an engine. A scripted engine on the
real Redis answers (tests/app/serving_helpers.py); the real engine is in tests/e2e."""

from __future__ import annotations

import json
import time

import pytest

from app.config import get_settings
from app.db import session_scope
from app.models import ServingUsage, User
from app.queue import redis_client
from app.services import serving_protocol as protocol
from app.services.accounts import create_api_token
from tests.app.helpers import bearer
from tests.app.serving_helpers import SERVE_BASE, install_base, make_adapter, scripted_engine

CHAT = "/v1/chat/completions"


@pytest.fixture(autouse=True)
def _base_installed():
    install_base()


def _chat(model: str, content: str = "Hi", **extra) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


def _token(user_id: int, scopes=("serve",), **extra) -> str:
    with session_scope() as db:
        user = db.get(User, user_id)
        return create_api_token(db, user, "test", scopes=scopes, **extra)


def _error(response, status: int) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and {"message", "type", "code"} <= set(body["error"]), body
    assert body["error"]["message"] and "Traceback" not in body["error"]["message"]
    return body["error"]


def test_a_chat_completion_in_openai_format_with_usage(client, make_user):
    user = make_user()
    _, slug = make_adapter(user.id)
    with scripted_engine() as taken:
        response = client.post(CHAT, headers=bearer(_token(user.id)), json=_chat(slug, max_tokens=50, temperature=0, seed=3, stop=["\n"]))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "chat.completion" and body["model"] == slug and body["id"].startswith("chatcmpl-")
    assert body["choices"] == [
        {"index": 0, "message": {"role": "assistant", "content": "Hello world"}, "logprobs": None, "finish_reason": "stop"}
    ]
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}
    request = taken[0]
    assert request.adapter is not None and request.base_model == SERVE_BASE
    assert (request.max_tokens, request.temperature, request.seed, request.stop) == (50, 0.0, 3, ["\n"])
    assert request.messages == [{"role": "user", "content": "Hi"}]


def test_a_streamed_chat_completion_is_openai_chunks_ending_with_done(client, make_user):
    user = make_user()
    _, slug = make_adapter(user.id)
    with scripted_engine():
        with client.stream(
            "POST", CHAT, headers=bearer(_token(user.id)), json=_chat(slug, stream=True, stream_options={"include_usage": True})
        ) as response:
            assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
            lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[len("data: ") :]) for line in lines[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == slug for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "Hello world"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 3


def test_a_completion_whole_and_streamed(client, make_user):
    user = make_user()
    _, slug = make_adapter(user.id)
    token = _token(user.id)
    with scripted_engine() as taken:
        whole = client.post("/v1/completions", headers=bearer(token), json={"model": slug, "prompt": "Once", "max_tokens": 2})
        with client.stream(
            "POST", "/v1/completions", headers=bearer(token), json={"model": slug, "prompt": ["Once"], "stream": True}
        ) as response:
            lines = [line for line in response.iter_lines() if line]
    assert whole.json()["object"] == "text_completion"
    assert whole.json()["choices"][0]["text"] == "Hello" and whole.json()["choices"][0]["finish_reason"] == "length"
    assert taken[0].prompt == "Once" and taken[0].messages is None
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    assert lines[-1] == "data: [DONE]" and "".join(c["choices"][0]["text"] for c in chunks) == "Hello world"


def test_models_lists_approved_adapters_and_installed_bases_of_the_tokens_workspace(client, make_user):
    user, other = make_user(), make_user()
    _, approved = make_adapter(user.id, name="approved one")
    _, draft = make_adapter(user.id, name="draft one", status="draft")
    _, theirs = make_adapter(other.id, name="their one")
    response = client.get("/v1/models", headers=bearer(_token(user.id)))
    ids = [m["id"] for m in response.json()["data"]]
    assert response.json()["object"] == "list"
    assert approved in ids and SERVE_BASE in ids and draft not in ids and theirs not in ids
    assert client.get(f"/v1/models/{approved}", headers=bearer(_token(user.id))).json()["id"] == approved
    _error(client.get(f"/v1/models/{theirs}", headers=bearer(_token(user.id))), 404)


@pytest.mark.parametrize("status", ["draft", "archived"])
def test_unapproved_unknown_and_other_workspaces_models_are_404_model_not_found(client, make_user, status):
    user, other = make_user(), make_user()
    _, unapproved = make_adapter(user.id, name=f"not served {status}", status=status)
    _, theirs = make_adapter(other.id, name="theirs")
    token = _token(user.id)
    for model in (unapproved, theirs, "no-such-model"):
        error = _error(client.post(CHAT, headers=bearer(token), json=_chat(model)), 404)
        assert error["code"] == "model_not_found" and error["param"] == "model"


def test_archiving_stops_serving_at_the_next_request(client, make_user):
    user = make_user()
    adapter_id, slug = make_adapter(user.id)
    token = _token(user.id)
    with scripted_engine():
        assert client.post(CHAT, headers=bearer(token), json=_chat(slug)).status_code == 200
        with session_scope() as db:
            from app.models import Adapter

            db.get(Adapter, adapter_id).status = "archived"
        _error(client.post(CHAT, headers=bearer(token), json=_chat(slug)), 404)


def test_tokens_are_checked_and_scoped(client, make_user):
    from datetime import timedelta

    from app.models import utcnow

    user = make_user()
    _, slug = make_adapter(user.id)
    assert _error(client.get("/v1/models"), 401)["type"] == "authentication_error"
    _error(client.get("/v1/models", headers=bearer("tlr_wrong")), 401)
    expired = _token(user.id, expires_at=utcnow() - timedelta(minutes=1))
    _error(client.get("/v1/models", headers=bearer(expired)), 401)
    manage_only = _token(user.id, scopes=("manage",))
    assert _error(client.post(CHAT, headers=bearer(manage_only), json=_chat(slug)), 401)["code"] == "insufficient_scope"
    assert client.get("/api/v1/datasets", headers=bearer(manage_only)).status_code == 200
    serve_only = _token(user.id, scopes=("serve",))
    refused = client.get("/api/v1/datasets", headers=bearer(serve_only))
    assert refused.status_code == 403 and "manage" in refused.json()["detail"]
    assert client.get("/v1/models", headers=bearer(serve_only)).status_code == 200
    listed = client.get("/api/v1/tokens", headers=bearer(user.token)).json()
    newest_serve = next(t for t in listed if t["scopes"] == ["serve"] and t["state"] == "active")
    assert newest_serve["last_used_at"] is not None
    assert client.delete(f"/api/v1/tokens/{newest_serve['id']}", headers=bearer(user.token)).json()["state"] == "revoked"
    _error(client.get("/v1/models", headers=bearer(serve_only)), 401)


@pytest.mark.parametrize(
    "body, param",
    [
        ({"temperature": 5}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages.0.role"),
        ({"n": 2}, "n"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"model": None}, "model"),
    ],
)
def test_bad_parameters_are_400_in_openai_format(client, make_user, body, param):
    user = make_user()
    _, slug = make_adapter(user.id)
    error = _error(client.post(CHAT, headers=bearer(_token(user.id)), json={**_chat(slug), **body}), 400)
    assert error["type"] == "invalid_request_error" and error["param"] == param and param.split(".")[0] in error["message"]


def test_odd_bodies_get_plain_4xx(client, make_user, settings, monkeypatch):
    user = make_user()
    _, slug = make_adapter(user.id)
    token = _token(user.id)
    assert (
        _error(client.post(CHAT, headers={**bearer(token), "content-type": "application/json"}, content=b"{not json"), 400)["code"]
        == "invalid_json"
    )
    _error(client.post(CHAT, headers=bearer(token), json=["a list"]), 400)
    too_many = _error(client.post(CHAT, headers=bearer(token), json=_chat(slug, max_tokens=settings.serve_max_tokens + 1)), 400)
    assert str(settings.serve_max_tokens) in too_many["message"]
    monkeypatch.setattr(settings, "max_body_bytes", 1000)  # the app-wide limit, answered in OpenAI's body here
    _error(client.post(CHAT, headers=bearer(token), json=_chat(slug, content="x" * 2000)), 413)
    assert _error(client.get("/v1/nothing-here", headers=bearer(token)), 404)["message"]


def test_an_engine_error_before_the_answer_is_its_status(client, make_user):
    user = make_user()
    _, slug = make_adapter(user.id)
    with scripted_engine():
        error = _error(client.post(CHAT, headers=bearer(_token(user.id)), json=_chat(slug, content="TOO LONG", stream=True)), 400)
    assert error["code"] == "context_length_exceeded"


def test_no_engine_is_a_quick_503_with_a_plain_message(client, make_user):
    user = make_user()
    _, slug = make_adapter(user.id)
    started = time.monotonic()
    error = _error(client.post(CHAT, headers=bearer(_token(user.id)), json=_chat(slug)), 503)
    assert time.monotonic() - started < 3
    assert "No serving engine is running" in error["message"] and "tailor engine" in error["message"]


def test_an_engine_that_beats_but_never_answers_is_a_bounded_503(client, make_user, settings, monkeypatch):
    user = make_user()
    _, slug = make_adapter(user.id)
    monkeypatch.setattr(settings, "serve_start_timeout_seconds", 1.0)
    redis_client().zadd(protocol.engines_key(SERVE_BASE), {"silent": time.time()})
    try:
        started = time.monotonic()
        error = _error(client.post(CHAT, headers=bearer(_token(user.id)), json=_chat(slug)), 503)
    finally:
        redis_client().zrem(protocol.engines_key(SERVE_BASE), "silent")
    assert time.monotonic() - started < 4 and "in time" in error["message"]


def test_the_request_rate_limit_is_429_with_retry_after(client, make_user, settings, monkeypatch):
    user = make_user()
    _, slug = make_adapter(user.id)
    monkeypatch.setattr(settings, "serve_requests_per_minute", 2)
    token = _token(user.id)
    with scripted_engine():
        assert [client.post(CHAT, headers=bearer(token), json=_chat(slug)).status_code for _ in range(2)] == [200, 200]
        refused = client.post(CHAT, headers=bearer(token), json=_chat(slug))
    assert _error(refused, 429)["code"] == "rate_limit_exceeded"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert client.post(CHAT, headers=bearer(_token(user.id)), json=_chat(slug)).status_code != 429  # per token


def test_the_token_rate_limit_counts_answers(client, make_user, settings, monkeypatch):
    user = make_user()
    _, slug = make_adapter(user.id)
    monkeypatch.setattr(settings, "serve_tokens_per_minute", 10)
    token = _token(user.id)
    with scripted_engine():
        assert client.post(CHAT, headers=bearer(token), json=_chat(slug)).status_code == 200  # 3 + 3 tokens
        assert client.post(CHAT, headers=bearer(token), json=_chat(slug)).status_code == 200  # 10 of 10 used
        assert _error(client.post(CHAT, headers=bearer(token), json=_chat(slug)), 429)["code"] == "rate_limit_exceeded"


def test_open_streams_are_capped_per_token(client, make_user, settings, monkeypatch):
    user = make_user()
    _, slug = make_adapter(user.id)
    monkeypatch.setattr(settings, "serve_max_streams_per_token", 0)
    with scripted_engine():
        error = _error(client.post(CHAT, headers=bearer(_token(user.id)), json=_chat(slug, stream=True)), 429)
    assert error["code"] == "too_many_streams"


def test_each_call_is_recorded_as_usage(client, make_user):
    user = make_user()
    adapter_id, slug = make_adapter(user.id)
    token = _token(user.id)
    with scripted_engine():
        client.post(CHAT, headers=bearer(token), json=_chat(slug))
        with client.stream("POST", CHAT, headers=bearer(token), json=_chat(slug, stream=True)) as response:
            list(response.iter_lines())
    client.post(CHAT, headers=bearer(token), json=_chat("no-such-model"))
    with session_scope() as db:
        workspace_id = db.get(User, user.id).workspace_id
        rows = db.query(ServingUsage).filter(ServingUsage.workspace_id == workspace_id).order_by(ServingUsage.id).all()
        seen = [(r.adapter_id, r.status, r.streamed, r.prompt_tokens, r.completion_tokens, r.first_token_ms is not None) for r in rows]
    assert seen == [(adapter_id, 200, False, 3, 3, True), (adapter_id, 200, True, 3, 3, True), (None, 404, False, 0, 0, False)]
    summary = client.get("/api/v1/usage", headers=bearer(user.token)).json()
    mine = next(r for r in summary if r["model"] == slug)
    assert (mine["requests"], mine["prompt_tokens"], mine["completion_tokens"], mine["errors"]) == (2, 6, 6, 0)
    assert mine["latency_p50_ms"] is not None


def test_the_endpoint_url_setting_is_read(settings):
    assert get_settings() is settings


def test_the_workspace_request_quota_covers_every_token_of_the_workspace(client, make_user, settings, monkeypatch):
    user = make_user()
    _, slug = make_adapter(user.id)
    monkeypatch.setattr(settings, "quota_requests_per_minute", 1)
    with scripted_engine():
        assert client.post(CHAT, headers=bearer(_token(user.id)), json=_chat(slug)).status_code == 200
        refused = client.post(CHAT, headers=bearer(_token(user.id)), json=_chat(slug))  # another token, same workspace
    error = _error(refused, 429)
    assert error["code"] == "rate_limit_exceeded" and "quota of requests per minute is 1" in error["message"]
    assert 1 <= int(refused.headers["retry-after"]) <= 60


def test_a_streamed_body_over_the_limit_is_a_413_in_openai_format(client, make_user, settings, monkeypatch):
    user = make_user()
    monkeypatch.setattr(settings, "max_body_bytes", 1000)
    chunks = iter([b'{"model": "x", "messages": [{"role": "user", "content": "', b"x" * 2000, b'"}]}'])  # no Content-Length
    refused = client.post(CHAT, headers={**bearer(_token(user.id)), "content-type": "application/json"}, content=chunks)
    assert "too large" in _error(refused, 413)["message"].lower() or "larger than" in _error(refused, 413)["message"]
