"""Request bodies are limited before sign-in, every answer carries the security headers, sign-in
never redirects off-site, /docs is served from vendored files, and the worker board's details are
for administrators."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from app.main import app
from app.web.home import _safe_next
from tests.app.helpers import bearer

ROOT = Path(__file__).resolve().parents[2]
MIB = 1024 * 1024


def _call(method: str, path: str, chunks, headers: list[tuple[bytes, bytes]]):
    """Drive the real app over ASGI with a body sent in chunks; report what the app pulled."""
    pulled = {"chunks": 0, "bytes": 0}
    sent: list[dict] = []
    source = iter(chunks)

    async def receive():
        try:
            chunk = next(source)
        except StopIteration:
            return {"type": "http.request", "body": b"", "more_body": False}
        pulled["chunks"] += 1
        pulled["bytes"] += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 5000),
        "server": ("testserver", 80),
    }
    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], dict(start["headers"]), body, pulled


def _endless(size: int = 64 * 1024):
    while True:
        yield b"[" * size


def test_a_declared_150_mb_body_without_credentials_is_refused_before_it_is_read():
    status, headers, body, pulled = _call(
        "POST", "/api/v1/jobs", _endless(), [(b"content-length", str(150 * 10**6).encode()), (b"content-type", b"application/json")]
    )
    assert status == 413 and pulled["chunks"] == 0
    assert "larger than the limit of 1.0 MB" in json.loads(body)["detail"]
    assert headers[b"connection"] == b"close" and b"content-security-policy" in headers


def test_a_streamed_body_without_a_length_is_cut_at_the_limit():
    """Chunked transfer (no Content-Length): the app stops pulling once the limit is passed."""
    status, _, body, pulled = _call("POST", "/api/v1/jobs", _endless(), [(b"content-type", b"application/json")])
    assert status == 413 and "larger than the limit" in json.loads(body)["detail"]
    assert MIB < pulled["bytes"] <= MIB + 64 * 1024


def test_a_streamed_form_post_on_a_page_is_cut_too():
    status, _, body, pulled = _call("POST", "/login", _endless(), [(b"content-type", b"application/x-www-form-urlencoded")])
    assert status == 413 and pulled["bytes"] <= MIB + 64 * 1024
    assert b"larger than the limit" in body


def test_a_page_gets_a_plain_413_for_a_declared_length(client):
    response = client.post("/login", content=b"x" * (MIB + 1), headers={"content-type": "application/x-www-form-urlencoded"})
    assert response.status_code == 413 and response.headers["content-type"].startswith("text/plain")
    assert "larger than the limit" in response.text


def test_uploads_keep_their_own_larger_limit(client, make_user):
    """A 2 MiB file (over the small limit, under TAILOR_MAX_UPLOAD_BYTES) uploads through both upload routes."""
    user = make_user("big-upload")
    rows = "".join(f"question {i} {'x' * 40},answer {i} {'y' * 40}\n" for i in range(24_000))
    content = ("question,answer\n" + rows).encode()
    assert len(content) > 2 * MIB
    response = client.post("/api/v1/datasets", headers=bearer(user.token), files={"file": ("big.csv", content, "text/csv")})
    assert response.status_code == 201, response.text


def test_small_bodies_pass(client, make_user):
    user = make_user("small-body")
    response = client.post("/api/v1/jobs", headers=bearer(user.token), json={"dataset_id": 999999})
    assert response.status_code in (404, 422)


@pytest.mark.parametrize(
    "path",
    ["/login", "/health", "/static/app.css", "/no-such-page", "/api/v1/datasets", "/openapi.json"],
)
def test_every_response_carries_the_security_headers(client, path):
    response = client.get(path, follow_redirects=False)
    csp = response.headers["content-security-policy"]
    for directive in (
        "default-src 'self'",
        "script-src 'self'",
        "frame-ancestors 'none'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
    ):
        assert directive in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "strict-origin-when-cross-origin"
    assert response.headers["x-frame-options"] == "DENY"


def test_templates_have_no_inline_scripts_handlers_or_style_attributes():
    import re

    found = []
    for path in sorted((ROOT / "templates").glob("*.html")):
        text = path.read_text()
        for match in re.finditer(r"<script(?![^>]*\bsrc=)(?![^>]*type=\"application/json\")[^>]*>", text):
            found.append(f"{path.name}: inline script {match.group(0)}")
        for match in re.finditer(r"\s(on[a-z]+|style)\s*=", text):
            found.append(f"{path.name}: {match.group(1)}= attribute")
    assert found == []


SAFE_NEXT_CASES = [
    ("/", "/"),
    ("/jobs/3", "/jobs/3"),
    ("/datasets/1?page=2", "/datasets/1?page=2"),
    ("/compare?ids=1&ids=2", "/compare?ids=1&ids=2"),
    ("//evil.com", "/"),
    ("/\\evil.com", "/"),
    ("\\\\evil.com", "/"),
    ("/%5Cevil.com", "/"),
    ("/%5cevil.com", "/"),
    ("/%255Cevil.com", "/"),
    ("/%2F/evil.com", "/"),
    ("/%2f%2fevil.com", "/"),
    ("https://evil.com", "/"),
    ("http:/evil.com", "/"),
    ("javascript:alert(1)", "/"),
    ("evil.com", "/"),
    ("/\t/evil.com", "/"),
    ("/\n/evil.com", "/"),
    ("", "/"),
]


@pytest.mark.parametrize("target, expected", SAFE_NEXT_CASES)
def test_safe_next_keeps_only_paths_of_this_site(target, expected):
    assert _safe_next(target) == expected


def test_the_login_form_does_not_carry_an_offsite_next(client):
    page = client.get("/login", params={"next": "/\\evil.com"})
    assert 'name="next" value="/"' in page.text


def test_docs_are_served_from_vendored_files_without_inline_script(client, make_user):
    from tests.conftest import sign_in

    user = make_user("docs")
    sign_in(client, user.email, user.password)
    page = client.get("/docs")
    assert page.status_code == 200
    assert "jsdelivr" not in page.text and "unpkg" not in page.text and "://" not in page.text  # nothing from another site
    assert "/static/vendor/swagger-ui-bundle-5.35.0.js" in page.text and "/static/swagger-init.js" in page.text
    for asset in ("/static/vendor/swagger-ui-bundle-5.35.0.js", "/static/vendor/swagger-ui-5.35.0.css", "/static/swagger-init.js"):
        assert client.get(asset).status_code == 200
    assert client.get("/redoc").status_code == 404


def test_the_worker_board_shows_details_to_administrators_only(client, make_user, db):
    from app.models import User, WorkerNode, utcnow

    db.add(
        WorkerNode(name="gpu-box-secret-name", hostname="rack7.internal", pid=1, queues="gpu", device="cuda:0 H100", heartbeat_at=utcnow())
    )
    db.commit()
    member, admin = make_user("member"), make_user("admin")
    db.get(User, admin.id).is_admin = True
    db.commit()

    plain = client.get("/api/v1/workers", headers=bearer(member.token)).json()
    assert plain["workers"] == [] and plain["counts"]["idle"] >= 1
    assert "gpu-box-secret-name" not in json.dumps(plain)
    full = client.get("/api/v1/workers", headers=bearer(admin.token)).json()
    assert any(w["name"] == "gpu-box-secret-name" and w["hostname"] == "rack7.internal" for w in full["workers"])

    from tests.conftest import sign_in

    sign_in(client, member.email, member.password)
    page = client.get("/workers").text
    assert "gpu-box-secret-name" not in page and "rack7" not in page and "idle" in page
    client.cookies.clear()
    sign_in(client, admin.email, admin.password)
    page = client.get("/workers").text
    assert "gpu-box-secret-name" in page and "rack7.internal" in page


def test_a_server_error_page_carries_the_security_headers_too(monkeypatch):
    """Unhandled errors are answered outside the middleware stack; the handler adds the headers itself."""
    from fastapi.testclient import TestClient

    from app.http import access
    from app.main import create_app

    monkeypatch.setitem(access.RULES, ("GET", "/api/v1/boom"), access.PUBLIC)

    fresh = create_app()

    @fresh.get("/api/v1/boom")
    def boom():
        raise RuntimeError("boom")

    with TestClient(fresh, raise_server_exceptions=False) as c:
        response = c.get("/api/v1/boom")
    assert response.status_code == 500 and "boom" not in response.text
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert response.headers["x-content-type-options"] == "nosniff"
