"""Password guessing is throttled per account and per address before any hash is computed;
passwords are hashed with Argon2id and old scrypt hashes are upgraded at the next sign-in."""

from __future__ import annotations

import hashlib
import itertools
import secrets
import time

import pytest
from fastapi.testclient import TestClient

from app.main import app
from app.models import User
from app.services import accounts
from tests.conftest import csrf_from

_addresses = itertools.count(10)


def _browser() -> TestClient:
    """A browser at an address of its own (the address limits are per client address)."""
    return TestClient(app, client=(f"10.16.{next(_addresses)}.1", 50000))


def _attempt(client: TestClient, email: str, password: str):
    token = csrf_from(client.get("/login").text)
    return client.post("/login", data={"email": email, "password": password, "csrf_token": token, "next": "/"}, follow_redirects=False)


@pytest.fixture
def hash_calls(monkeypatch):
    """How many password hashes were checked (a spy around the real function)."""
    calls = []
    real = accounts.verify_password

    def counting(password, stored):
        calls.append(stored)
        return real(password, stored)

    monkeypatch.setattr(accounts, "verify_password", counting)
    return calls


def test_155_wrong_passwords_are_throttled_and_the_right_one_works_after_the_lockout(make_user, settings, monkeypatch, hash_calls):
    monkeypatch.setattr(settings, "sign_in_account_limits", "5/10second;100/hour")
    monkeypatch.setattr(settings, "sign_in_address_limits", "1000/minute")  # this test is about the account's limit
    user = make_user("guessed")
    statuses = []
    with _browser() as attacker:
        started = time.monotonic()
        for i in range(5):
            statuses.append(_attempt(attacker, user.email, f"guess number {i}").status_code)
        refused = _attempt(attacker, user.email, user.password)  # locked: even the right password waits
        for i in range(5, 155):
            statuses.append(_attempt(attacker, user.email, f"guess number {i}").status_code)
        elapsed = time.monotonic() - started
        last = _attempt(attacker, user.email, "one more guess")
    hashed = len(hash_calls)
    answered = statuses.count(401)
    assert statuses[:6] == [401] * 5 + [429]
    assert set(statuses) == {401, 429}
    assert refused.status_code == 429 and "Too many failed sign-ins" in refused.text
    # At most 5 guesses per 10-second window got an answer; every other one was refused.
    assert answered <= 5 * (elapsed // 10 + 1), (answered, elapsed)
    assert statuses.count(429) >= 100
    assert hashed == answered + (last.status_code == 401), "a throttled attempt must not compute a password hash"
    wait = int(refused.headers["Retry-After"])
    assert 1 <= wait <= 10
    if last.status_code == 429:
        time.sleep(int(last.headers["Retry-After"]) + 0.2)
    with _browser() as owner:
        ok = _attempt(owner, user.email, user.password)
    assert ok.status_code == 303 and ok.headers["location"] == "/"


def test_the_lockout_grows_with_the_longer_windows(make_user, settings, monkeypatch):
    monkeypatch.setattr(settings, "sign_in_account_limits", "2/8second;4/hour")
    user = make_user("backoff")
    with _browser() as attacker:
        assert [_attempt(attacker, user.email, "wrong one").status_code for _ in range(2)] == [401, 401]
        short = _attempt(attacker, user.email, "wrong one")
        assert short.status_code == 429 and int(short.headers["Retry-After"]) <= 8
        time.sleep(int(short.headers["Retry-After"]) + 0.2)
        assert [_attempt(attacker, user.email, "wrong one").status_code for _ in range(2)] == [401, 401]
        locked = _attempt(attacker, user.email, user.password)  # the hour's window is full now
    assert locked.status_code == 429 and int(locked.headers["Retry-After"]) > 3000
    assert "minutes" in locked.text


def test_one_address_guessing_many_accounts_is_throttled(make_user, settings, monkeypatch):
    monkeypatch.setattr(settings, "sign_in_address_limits", "10/minute")
    with _browser() as sprayer:
        statuses = [_attempt(sprayer, f"nobody{i}-{secrets.token_hex(3)}@example.com", "password1").status_code for i in range(12)]
    assert statuses == [401] * 10 + [429] * 2
    user = make_user("elsewhere")
    with _browser() as colleague:  # another address is not affected
        assert _attempt(colleague, user.email, user.password).status_code == 303


def test_a_successful_sign_in_clears_the_accounts_failures(make_user, settings, monkeypatch):
    monkeypatch.setattr(settings, "sign_in_account_limits", "3/minute")
    user = make_user("typo")
    with _browser() as browser:
        assert [_attempt(browser, user.email, "typo!").status_code for _ in range(2)] == [401, 401]
        assert _attempt(browser, user.email, user.password).status_code == 303
    with _browser() as browser:
        assert [_attempt(browser, user.email, "typo!").status_code for _ in range(2)] == [401, 401]
        assert _attempt(browser, user.email, user.password).status_code == 303


def test_passwords_are_argon2id_with_parameters_in_the_hash(make_user, db):
    user = db.get(User, make_user("argon").id)
    assert user.password_hash.startswith("$argon2id$v=19$m=")
    assert accounts.verify_password("correct horse battery", user.password_hash)
    assert not accounts.verify_password("wrong", user.password_hash)
    assert not accounts.needs_rehash(user.password_hash)


def _old_scrypt_hash(password: str) -> str:
    """A hash as Tailor wrote them before Argon2id."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1, dklen=32)
    return f"scrypt${salt.hex()}${digest.hex()}"


def test_an_scrypt_user_signs_in_and_is_upgraded_to_argon2id(make_user, db):
    made = make_user("legacy")
    user = db.get(User, made.id)
    user.password_hash = _old_scrypt_hash(made.password)
    db.commit()
    with _browser() as browser:
        assert _attempt(browser, made.email, "not the password").status_code == 401
        db.refresh(user)
        assert user.password_hash.startswith("scrypt$")
        assert _attempt(browser, made.email, made.password).status_code == 303
    db.refresh(user)
    assert user.password_hash.startswith("$argon2id$")
    with _browser() as browser:
        assert _attempt(browser, made.email, made.password).status_code == 303


def test_weaker_argon2_parameters_are_upgraded_too(make_user, db):
    from argon2 import PasswordHasher

    made = make_user("weak")
    user = db.get(User, made.id)
    user.password_hash = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(made.password)
    db.commit()
    assert accounts.needs_rehash(user.password_hash)
    with _browser() as browser:
        assert _attempt(browser, made.email, made.password).status_code == 303
    db.refresh(user)
    assert not accounts.needs_rehash(user.password_hash)


def test_a_malformed_stored_hash_never_matches():
    for stored in ("", "scrypt$zz$00", "plain", accounts.NO_PASSWORD, "$argon2id$garbage"):
        assert not accounts.verify_password("anything", stored)


def test_sign_in_still_works_when_redis_is_unreachable(make_user, settings, monkeypatch, caplog):
    monkeypatch.setattr(settings, "redis_url", "redis://127.0.0.1:1/0")
    user = make_user("no-redis")
    with _browser() as browser:
        assert _attempt(browser, user.email, "wrong password").status_code == 401
        assert _attempt(browser, user.email, user.password).status_code == 303
    assert "Sign-in throttling is unavailable" in caplog.text


def test_a_malformed_limit_setting_is_refused_at_start():
    from pydantic import ValidationError

    from app.config import Settings

    with pytest.raises(ValidationError, match="is not a list of rates"):
        Settings(sign_in_account_limits="five per minute")
    assert Settings(sign_in_address_limits="").sign_in_address_limits == ""


def test_the_hash_cost_follows_the_settings_and_defaults_to_rfc_9106_low_memory(settings, monkeypatch):
    from app.config import Settings

    names = ("password_hash_time_cost", "password_hash_memory_kib", "password_hash_parallelism")
    defaults = {name: Settings.model_fields[name].default for name in names}
    assert defaults == {"password_hash_time_cost": 3, "password_hash_memory_kib": 65536, "password_hash_parallelism": 4}
    cheap = accounts.hash_password("a password here")
    assert "m=16384,t=1,p=1" in cheap  # the test suite's setting (tests/conftest.py)
    monkeypatch.setattr(settings, "password_hash_memory_kib", 32768)
    assert accounts.needs_rehash(cheap)  # a raised cost upgrades old hashes at the next sign-in
    assert "m=32768,t=1,p=1" in accounts.hash_password("a password here")
