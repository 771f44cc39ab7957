"""Sessions are signed with a key of this install's own: a cookie forged with any built-in value is
refused, the key is made once, kept owner-only and reused, and TAILOR_SECRET_KEY still wins."""

from __future__ import annotations

import json
import multiprocessing
import stat
from base64 import b64encode
from pathlib import Path

import itsdangerous
import pytest
from pydantic import ValidationError

from app.config import Settings
from app.secret_key import KEY_FILE_NAME, SecretKeyError, load_or_create_secret_key

# The constant that signed every default install's sessions before this key existed.
FORMER_BUILT_IN_KEY = "dev-insecure-secret-change-me"


def _session_cookie(secret: str, data: dict) -> str:
    """A session cookie exactly as Starlette's SessionMiddleware signs one."""
    return itsdangerous.TimestampSigner(secret).sign(b64encode(json.dumps(data).encode())).decode()


def _dashboard_with_cookie(client, cookie: str):
    client.cookies.set("tailor_session", cookie)
    try:
        return client.get("/", follow_redirects=False)
    finally:
        client.cookies.clear()


def test_a_cookie_forged_with_the_former_built_in_key_is_refused(client, make_user, settings):
    from app.db import session_scope
    from app.services.user_sessions import start_session

    user = make_user()
    with session_scope() as db:  # a live server-side session: the cookie carries its id
        session_id = start_session(db, user.id)
    forged = _dashboard_with_cookie(client, _session_cookie(FORMER_BUILT_IN_KEY, {"sid": session_id}))
    assert forged.status_code == 303 and forged.headers["location"].startswith("/login")
    # The same cookie signed with the install's own key is accepted: the refusal above is the key's doing.
    genuine = _dashboard_with_cookie(client, _session_cookie(settings.session_secret(), {"sid": session_id}))
    assert genuine.status_code == 200


def test_the_key_is_made_once_owner_only_and_reused(tmp_path):
    key = load_or_create_secret_key(tmp_path)
    path = tmp_path / KEY_FILE_NAME
    assert len(key) >= 48 and key != FORMER_BUILT_IN_KEY
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_secret_key(tmp_path) == key
    assert Settings(data_dir=tmp_path).session_secret() == key
    assert load_or_create_secret_key(tmp_path / "another-install") != key


def test_an_explicit_key_wins_and_a_short_one_is_refused(tmp_path):
    explicit = "x" * 40
    assert Settings(data_dir=tmp_path, secret_key=explicit).session_secret() == explicit
    assert not (tmp_path / KEY_FILE_NAME).exists()
    assert Settings(data_dir=tmp_path, secret_key="").session_secret() == load_or_create_secret_key(tmp_path)
    with pytest.raises(ValidationError, match="at least 32 characters"):
        Settings(data_dir=tmp_path, secret_key="short")


def _make_key(folder: str, queue) -> None:
    queue.put(load_or_create_secret_key(Path(folder)))


def test_processes_starting_together_share_one_key(tmp_path):
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    processes = [context.Process(target=_make_key, args=(str(tmp_path), queue)) for _ in range(6)]
    for process in processes:
        process.start()
    keys = {queue.get(timeout=60) for _ in processes}
    for process in processes:
        process.join(timeout=30)
    assert keys == {(tmp_path / KEY_FILE_NAME).read_text().strip()}
    assert [p.name for p in tmp_path.iterdir()] == [KEY_FILE_NAME]  # no temporary files left behind


def test_a_key_file_readable_by_others_is_restricted(tmp_path):
    key = load_or_create_secret_key(tmp_path)
    (tmp_path / KEY_FILE_NAME).chmod(0o644)
    assert load_or_create_secret_key(tmp_path) == key
    assert stat.S_IMODE((tmp_path / KEY_FILE_NAME).stat().st_mode) == 0o600


def test_a_damaged_key_file_is_a_clear_error(tmp_path):
    (tmp_path / KEY_FILE_NAME).write_text("short\n")
    with pytest.raises(SecretKeyError, match="Delete the file"):
        load_or_create_secret_key(tmp_path)
