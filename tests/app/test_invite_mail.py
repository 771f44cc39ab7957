"""Invite emails through a real SMTP server process (the standard library's smtpd on Python 3.11;
skipped where it no longer exists, 3.12+), and the invite that still works when mail fails."""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
import time

import pytest

from app.http.deps import settings_dep
from app.main import app
from tests.app.helpers import bearer


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _with_settings(settings, **changes):
    changed = settings.model_copy(update=changes)
    app.dependency_overrides[settings_dep] = lambda: changed


@pytest.fixture
def smtp_server():
    if importlib.util.find_spec("smtpd") is None:
        pytest.skip("No SMTP server to test with: smtpd left the standard library in Python 3.12 and aiosmtpd is not installed.")
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-W", "ignore", "-u", "-m", "smtpd", "-n", "-c", "DebuggingServer", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    yield port, proc
    proc.terminate()


def test_an_invite_is_emailed_when_smtp_is_configured(client, make_user, settings, smtp_server):
    port, proc = smtp_server
    owner = make_user("owner")
    _with_settings(settings, smtp_host="127.0.0.1", smtp_port=port, smtp_starttls=False, smtp_from="tailor@example.com")
    try:
        created = client.post("/api/v1/invites", headers=bearer(owner.token), json={"email": "mailed@example.com", "role": "member"}).json()
    finally:
        app.dependency_overrides.pop(settings_dep, None)
    assert created["emailed"] is True and created["email_error"] is None
    proc.terminate()
    printed = proc.communicate(timeout=10)[0]
    assert "To: mailed@example.com" in printed and "From: tailor@example.com" in printed
    assert created["link"] in printed and "as member" in printed


def test_the_link_is_shown_when_the_mail_server_cannot_be_reached(client, make_user, settings):
    owner = make_user("owner")
    _with_settings(settings, smtp_host="127.0.0.1", smtp_port=_free_port(), smtp_starttls=False, smtp_timeout_seconds=2)
    try:
        response = client.post("/api/v1/invites", headers=bearer(owner.token), json={"email": "unmailed@example.com", "role": "viewer"})
    finally:
        app.dependency_overrides.pop(settings_dep, None)
    created = response.json()
    assert response.status_code == 201 and created["emailed"] is False
    assert "could not be sent" in created["email_error"] and "/invite/inv_" in created["link"]
