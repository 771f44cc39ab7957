"""Single sign-on end to end against a real OpenID Connect provider (oidc-provider-mock, a
standards-compliant provider built on Authlib's server, started as a process of its own, with
Authlib's PKCE extension required: tests/oidc_pkce_provider.py): the authorization-code flow with
state, nonce and PKCE (S256), the ID token checked by Authlib, users created in their domain's
workspace, other domains refused, and signing out at the provider too (RP-initiated logout)."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.main import app
from app.models import AuditEvent, SsoIdentity, User, UserSession, Workspace, utcnow
from app.services import accounts
from tests.conftest import ROOT, _free_port

_people = itertools.count(1)


@pytest.fixture(scope="module")
def provider():
    """The OpenID Connect provider, as a process on a free port; its issuer URL."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.oidc_pkce_provider", "--port", str(port), "--require-nonce"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "NO_COLOR": "1"},
    )
    issuer = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(issuer + "/.well-known/openid-configuration", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert proc.poll() is None and time.monotonic() < deadline, "the OIDC provider did not start"
        time.sleep(0.2)
    yield issuer
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def sso_settings(settings, provider, monkeypatch):
    monkeypatch.setattr(settings, "oidc_issuer", provider)
    monkeypatch.setattr(settings, "oidc_client_id", "tailor")
    monkeypatch.setattr(settings, "oidc_client_secret", "tailor-client-secret")
    monkeypatch.setattr(settings, "oidc_allowed_domains", "acme.test, acme-labs.test")
    return settings


def _person(provider: str, domain: str = "acme.test", **claims) -> tuple[str, str]:
    """A person at the provider: (subject, email)."""
    n = next(_people)
    sub, email = f"person-{n}-{os.getpid()}", f"person{n}-{os.getpid()}@{domain}"
    response = httpx.put(f"{provider}/users/{sub}", json={"email": email, "email_verified": True, **claims})
    assert response.status_code == 204, response.text
    return sub, email


def _sso(browser: TestClient, sub: str, next_path: str = "/"):
    """The whole browser round trip: Tailor → provider (the person signs in as `sub`) → Tailor."""
    start = browser.get("/login/sso", params={"next": next_path}, follow_redirects=False)
    assert start.status_code == 302, start.text
    authorize = start.headers["location"]
    query = parse_qs(urlsplit(authorize).query)
    assert query["response_type"] == ["code"] and query["client_id"] == ["tailor"] and "state" in query and "nonce" in query
    assert query["code_challenge_method"] == ["S256"] and len(query["code_challenge"][0]) == 43  # PKCE
    consent = httpx.post(authorize, data={"sub": sub}, follow_redirects=False)
    assert consent.status_code in (302, 303), consent.text
    back = consent.headers["location"]
    assert back.startswith("http://testserver/login/sso/callback?")
    return browser.get(back, follow_redirects=False)


def test_the_login_page_offers_sso_only_when_configured(client, settings, monkeypatch):
    assert "Sign in with SSO" not in client.get("/login").text
    assert client.get("/login/sso", follow_redirects=False).status_code == 404
    monkeypatch.setattr(settings, "oidc_issuer", "https://login.example.com")
    monkeypatch.setattr(settings, "oidc_client_id", "tailor")
    monkeypatch.setattr(settings, "oidc_client_secret", "secret")
    assert 'href="/login/sso?next=/"' in client.get("/login").text.replace("%2F", "/")


def test_a_first_sso_sign_in_creates_the_user_in_their_domains_workspace(sso_settings, provider, db):
    sub, email = _person(provider, "acme-labs.test")
    colleague_sub, colleague_email = _person(provider, "acme-labs.test")
    with TestClient(app) as browser:
        done = _sso(browser, sub, "/datasets/new")
        assert done.status_code == 303 and done.headers["location"] == "/datasets/new"
        assert browser.get("/api/v1/datasets").status_code == 200
        assert browser.get("/api/v1/account/sessions").json()[0]["method"] == "sso"
    user = db.scalar(select(User).where(User.email == email))
    assert user is not None and user.password_hash == accounts.NO_PASSWORD and not user.is_admin
    assert user.workspace.name == "acme-labs.test"
    identity = db.scalar(select(SsoIdentity).where(SsoIdentity.user_id == user.id))
    assert identity.issuer == provider and identity.subject == sub

    with TestClient(app) as browser:  # a colleague of the same domain joins the same workspace
        assert _sso(browser, colleague_sub).status_code == 303
    colleague = db.scalar(select(User).where(User.email == colleague_email))
    assert colleague.workspace_id == user.workspace_id

    with TestClient(app) as browser:  # the next sign-in finds the same account
        assert _sso(browser, sub).status_code == 303
    assert len(db.scalars(select(User).where(User.email == email)).all()) == 1
    assert db.scalar(select(UserSession).where(UserSession.user_id == user.id, UserSession.method == "sso")) is not None
    assert user.role == "owner" and colleague.role == "member"  # the first of a domain owns its new workspace
    signed_in = db.scalars(select(AuditEvent).where(AuditEvent.user_id == user.id, AuditEvent.action == "sign_in")).all()
    assert len(signed_in) == 2 and all(e.details == {"method": "sso"} for e in signed_in)


def test_a_disallowed_domain_is_refused_plainly_and_nobody_is_created(sso_settings, provider, db):
    sub, email = _person(provider, "evil.test")
    with TestClient(app) as browser:
        refused = _sso(browser, sub)
        assert refused.status_code == 403
        assert "Accounts of evil.test may not sign in to Tailor with SSO" in refused.text
        assert browser.get("/api/v1/datasets").status_code == 401
    assert db.scalar(select(User).where(User.email == email)) is None
    assert db.scalar(select(Workspace).where(Workspace.name == "evil.test")) is None
    event = db.scalar(select(AuditEvent).where(AuditEvent.user_email == email))
    assert event.action == "sign_in_failed" and event.details == {"method": "sso"}


def test_an_unverified_email_is_refused(sso_settings, provider, db):
    sub, email = _person(provider, email_verified=False)
    with TestClient(app) as browser:
        refused = _sso(browser, sub)
    assert refused.status_code == 403 and "has not verified" in refused.text
    assert db.scalar(select(User).where(User.email == email)) is None


def test_an_existing_password_account_is_linked_and_keeps_its_workspace(sso_settings, provider, db):
    from app.db import session_scope

    sub, email = _person(provider)
    with session_scope() as s:
        existing = accounts.create_user(s, email, "a password of theirs")
        existing_id, workspace_id = existing.id, existing.workspace_id
    with TestClient(app) as browser:
        assert _sso(browser, sub).status_code == 303
        assert browser.get("/api/v1/datasets").status_code == 200
    user = db.get(User, existing_id)
    assert user.workspace_id == workspace_id and accounts.verify_password("a password of theirs", user.password_hash)


def test_a_forged_or_replayed_callback_is_refused(sso_settings, provider):
    sub, _ = _person(provider)
    with TestClient(app) as browser:
        start = browser.get("/login/sso", follow_redirects=False)
        consent = httpx.post(start.headers["location"], data={"sub": sub}, follow_redirects=False)
        back = consent.headers["location"]
        with TestClient(app) as other_browser:  # the code arrives in a browser that did not start the flow
            wrong = other_browser.get(back, follow_redirects=False)
            assert wrong.status_code == 400 and "did not complete" in wrong.text
        assert browser.get(back, follow_redirects=False).status_code == 303
        replay = browser.get(back, follow_redirects=False)  # the state is used up
        assert replay.status_code == 400
    with TestClient(app) as browser:
        assert browser.get("/login/sso/callback?code=made-up&state=made-up", follow_redirects=False).status_code == 400


def test_a_denied_sign_in_at_the_provider_comes_back_as_a_plain_message(sso_settings, provider):
    with TestClient(app) as browser:
        start = browser.get("/login/sso", follow_redirects=False)
        denied = httpx.post(start.headers["location"], data={"action": "deny"}, follow_redirects=False)
        back = browser.get(denied.headers["location"], follow_redirects=False)
    assert back.status_code == 400 and "did not complete" in back.text


def test_a_disabled_user_cannot_sign_in_by_sso(sso_settings, provider, db):
    from app.db import session_scope

    sub, email = _person(provider)
    with TestClient(app) as browser:
        assert _sso(browser, sub).status_code == 303
    with session_scope() as s:
        s.scalar(select(User).where(User.email == email)).disabled_at = utcnow()
    with TestClient(app) as browser:
        refused = _sso(browser, sub)
        assert refused.status_code == 403 and "disabled" in refused.text
        assert browser.get("/api/v1/datasets").status_code == 401


def test_an_unknown_default_role_is_refused_at_start():
    from pydantic import ValidationError

    from app.config import Settings

    with pytest.raises(ValidationError, match="must be one of viewer, member, owner"):
        Settings(oidc_default_role="superuser")


def test_the_provider_checks_tailors_pkce_verifier_and_refuses_the_code_without_it(sso_settings, provider):
    """The provider of these tests requires PKCE (S256) and checks the code_verifier with Authlib's
    RFC 7636 extension: the code Tailor receives is refused with a missing or wrong verifier, and
    Tailor's own exchange of that same code succeeds, so Tailor sent the verifier of its challenge."""
    sub, _ = _person(provider)
    token_endpoint = httpx.get(provider + "/.well-known/openid-configuration").json()["token_endpoint"]
    with TestClient(app) as browser:
        start = browser.get("/login/sso", follow_redirects=False)
        consent = httpx.post(start.headers["location"], data={"sub": sub}, follow_redirects=False)
        back = consent.headers["location"]
        code = parse_qs(urlsplit(back).query)["code"][0]
        exchange = {"grant_type": "authorization_code", "code": code, "redirect_uri": "http://testserver/login/sso/callback"}
        secret = ("tailor", "tailor-client-secret")
        missing = httpx.post(token_endpoint, data=exchange, auth=secret)
        assert missing.status_code == 400 and "code_verifier" in missing.json()["error_description"]
        wrong = httpx.post(token_endpoint, data={**exchange, "code_verifier": "x" * 64}, auth=secret)
        assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
        assert browser.get(back, follow_redirects=False).status_code == 303
        assert browser.get("/api/v1/datasets").status_code == 200


def test_signing_out_of_an_sso_session_signs_out_at_the_provider_and_comes_back_to_login(sso_settings, provider, make_user):
    from tests.conftest import csrf_from, sign_in

    sub, _ = _person(provider)
    end_session = httpx.get(provider + "/.well-known/openid-configuration").json()["end_session_endpoint"]
    with TestClient(app) as browser:
        assert _sso(browser, sub).status_code == 303
        out = browser.post("/logout", data={"csrf_token": csrf_from(browser.get("/datasets/new").text)}, follow_redirects=False)
        assert out.status_code == 303
        location = out.headers["location"]
        assert location.split("?")[0] == end_session
        assert parse_qs(urlsplit(location).query) == {"client_id": ["tailor"], "post_logout_redirect_uri": ["http://testserver/login"]}
        assert browser.get("/api/v1/datasets").status_code == 401  # Tailor's session ended first
        # The provider's sign-out page, confirmed, sends the browser back to Tailor's login page.
        page = httpx.get(location)
        assert page.status_code == 200 and 'value="http://testserver/login"' in page.text
        confirmed = httpx.post(provider + "/oauth2/end_session/confirm", data={"redirect_uri": "http://testserver/login"})
        assert confirmed.status_code == 302 and confirmed.headers["location"] == "http://testserver/login"

    with TestClient(app) as browser:  # a password session signs out at Tailor only
        user = make_user("pw")
        csrf = sign_in(browser, user.email, user.password)
        assert browser.post("/logout", data={"csrf_token": csrf}, follow_redirects=False).headers["location"] == "/login"


def test_provider_logout_can_be_turned_off(sso_settings, provider, monkeypatch):
    from tests.conftest import csrf_from

    monkeypatch.setattr(sso_settings, "oidc_provider_logout", False)
    sub, _ = _person(provider)
    with TestClient(app) as browser:
        assert _sso(browser, sub).status_code == 303
        out = browser.post("/logout", data={"csrf_token": csrf_from(browser.get("/datasets/new").text)}, follow_redirects=False)
        assert out.headers["location"] == "/login" and browser.get("/api/v1/datasets").status_code == 401


def test_the_end_session_url_keeps_the_providers_own_query():
    from app.services.sso import end_session_url

    url = end_session_url("https://login.example.com/logout?tenant=acme", "tailor", "https://tailor.example.com/login")
    assert url == (
        "https://login.example.com/logout?tenant=acme&client_id=tailor&post_logout_redirect_uri=https%3A%2F%2Ftailor.example.com%2Flogin"
    )
