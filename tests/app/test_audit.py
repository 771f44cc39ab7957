"""The audit log: what is recorded (who, what, target, when, from where), filters and pages, the
page and the CSV export (formula cells made inert), who may read it, and that nothing in the app
can change or delete it."""

from __future__ import annotations

import ast
import csv
import io
import re
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from app.models import Adapter, AuditEvent, Dataset, Job
from tests.app.helpers import SAMPLE_CSV, bearer, upload
from tests.conftest import csrf_from, sign_in

ROOT = Path(__file__).resolve().parents[2]


def _events(client, token: str, **params) -> list[dict]:
    response = client.get("/api/v1/audit", headers=bearer(token), params=params)
    assert response.status_code == 200, response.text
    return response.json()["events"]


def _adapter_of(db, dataset_id: int) -> Adapter:
    """A finished job's adapter with a zip in the store, as training leaves it."""
    from app.services.adapters import ZIP_NAME, adapter_storage_key
    from app.services.artifacts import get_artifact_store

    dataset = db.get(Dataset, dataset_id)
    job = Job(
        workspace_id=dataset.workspace_id, dataset_id=dataset.id, name="j", task="instruction", column_mapping={},
        base_model="tiny-llama", technique="lora", params={}, status="succeeded",
    )  # fmt: skip
    db.add(job)
    db.flush()
    key = adapter_storage_key(job.id)
    store = get_artifact_store()
    store.path(key).mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(store.path(f"{key}/{ZIP_NAME}"), "w") as archive:
        archive.writestr("adapter_config.json", "{}")
    adapter = Adapter(
        workspace_id=dataset.workspace_id, job_id=job.id, name="a", technique="lora", base_model="tiny-llama", storage_key=key
    )
    db.add(adapter)
    db.commit()
    return adapter


def test_sign_ins_and_failures_are_recorded_with_address_and_browser(client, make_user):
    owner = make_user("owner")
    token = csrf_from(client.get("/login").text)
    headers = {"User-Agent": "AuditTest/1.0"}
    client.post("/login", data={"email": owner.email, "password": "wrong", "csrf_token": token}, headers=headers)
    sign_in(client, owner.email, owner.password)
    failed = [e for e in _events(client, owner.token, action="sign_in_failed") if e["user_email"] == owner.email]
    # A failure has no workspace of its own (anyone can type any email): only administrators see it.
    assert failed == []
    ok = _events(client, owner.token, action="sign_in")[0]
    assert ok["user_email"] == owner.email and ok["user_id"] == owner.id and ok["client_ip"] == "testclient"
    from app.db import session_scope

    with session_scope() as db:
        row = db.query(AuditEvent).filter_by(action="sign_in_failed", user_email=owner.email).one()
        assert (row.user_id, row.workspace_id, row.user_agent) == (None, None, "AuditTest/1.0")


def test_data_jobs_adapters_and_tokens_are_recorded(client, make_user, db, tiny_model_dir):
    owner = make_user("owner")
    dataset = upload(client, owner.token, SAMPLE_CSV.read_bytes(), "northwind.csv").json()
    job = client.post(
        "/api/v1/jobs",
        headers=bearer(owner.token),
        json={
            "dataset_id": dataset["id"],
            "column_mapping": {"prompt": "question", "response": "answer"},
            "base_model": "tiny-llama",
            "technique": "lora",
            "params": {"max_steps": 1},
        },
    ).json()
    assert client.post(f"/api/v1/jobs/{job['id']}/cancel", headers=bearer(owner.token)).status_code == 200
    adapter = _adapter_of(db, dataset["id"])
    assert client.patch(f"/api/v1/adapters/{adapter.id}", headers=bearer(owner.token), json={"status": "approved"}).status_code == 200
    assert client.get(f"/api/v1/adapters/{adapter.id}/download", headers=bearer(owner.token)).status_code == 200
    assert client.get(f"/datasets/{dataset['id']}/export.csv", headers=bearer(owner.token)).status_code == 200
    created = client.post("/api/v1/tokens", headers=bearer(owner.token), json={"name": "ci"}).json()
    assert client.delete(f"/api/v1/tokens/{created['id']}", headers=bearer(owner.token)).json()["state"] == "revoked"
    assert client.get("/api/v1/datasets", headers=bearer(created["secret"])).status_code == 401  # revoked
    second = upload(client, owner.token, b"q,a\n1,2\n3,4\n").json()
    assert client.delete(f"/api/v1/datasets/{second['id']}", headers=bearer(owner.token)).status_code == 204

    seen = [(e["action"], e["target_type"], e["target_id"], e["details"]) for e in reversed(_events(client, owner.token))]
    assert seen == [
        ("dataset_uploaded", "dataset", str(dataset["id"]), {"filename": "northwind.csv", "existing": False}),
        ("job_started", "job", str(job["id"]), {"technique": "lora", "base_model": "tiny-llama"}),
        ("job_cancelled", "job", str(job["id"]), {}),
        ("adapter_status_changed", "adapter", str(adapter.id), {"status": "approved"}),
        ("adapter_downloaded", "adapter", str(adapter.id), {"file": "zip"}),
        ("dataset_downloaded", "dataset", str(dataset["id"]), {"training_copy": False}),
        ("token_created", "token", str(created["id"]), {"name": "ci", "scopes": ["serve"]}),
        ("token_revoked", "token", str(created["id"]), {"name": "ci"}),
        ("dataset_uploaded", "dataset", str(second["id"]), {"filename": "data.csv", "existing": False}),
        ("dataset_deleted", "dataset", str(second["id"]), {"name": "data"}),
    ]


def test_filters_pages_and_workspaces(client, make_user, db):
    owner, stranger = make_user("owner"), make_user("stranger")
    from app.models import User
    from app.services import audit

    me = db.get(User, owner.id)
    old = audit.record(db, audit.RequestMeta("10.0.0.1", "ua"), me, "dataset_deleted", ("dataset", 1))
    old.created_at = datetime.now(UTC) - timedelta(days=10)
    for n in range(5):
        audit.record(db, audit.RequestMeta("10.0.0.2", "ua"), me, "token_created", ("token", n))
    audit.record(db, audit.RequestMeta("10.0.0.3", "ua"), db.get(User, stranger.id), "token_created", ("token", 99))
    db.commit()

    assert len(_events(client, owner.token)) == 6
    assert all(e["user_email"] == stranger.email for e in _events(client, stranger.token))  # each owner sees their workspace only
    first = client.get("/api/v1/audit", headers=bearer(owner.token), params={"page_size": 4}).json()
    second = client.get("/api/v1/audit", headers=bearer(owner.token), params={"page_size": 4, "page": 2}).json()
    assert (first["total"], first["has_next"], len(first["events"]), len(second["events"]), second["has_next"]) == (6, True, 4, 2, False)
    assert [e["action"] for e in _events(client, owner.token, action="dataset_deleted")] == ["dataset_deleted"]
    today = datetime.now(UTC).date()
    assert len(_events(client, owner.token, since=str(today))) == 5
    assert len(_events(client, owner.token, until=str(today - timedelta(days=5)))) == 1
    assert _events(client, owner.token, email="nobody-like-this") == []
    bad = client.get("/api/v1/audit", headers=bearer(owner.token), params={"action": "drop_table"})
    assert bad.status_code == 422 and "no audit action" in bad.json()["detail"]
    page = client.get("/settings/audit", headers=bearer(owner.token), params={"action": "token_created", "since": str(today)})
    assert page.status_code == 200 and page.text.count('data-action="token_created"') == 5
    assert client.get("/settings/audit", headers=bearer(owner.token), params={"since": "yesterday"}).status_code == 422


def test_administrators_see_every_workspace_and_failed_sign_ins(client, make_user, db):
    from app.db import session_scope
    from app.services.accounts import create_api_token, create_user

    with session_scope() as s:
        admin_token = create_api_token(
            s, create_user(s, f"root-{datetime.now().timestamp()}@example.com", "correct horse battery", is_admin=True)
        )
    owner = make_user("owner")
    client.post(
        "/login", data={"email": '=HYPERLINK("http://evil")@x.com', "password": "x", "csrf_token": csrf_from(client.get("/login").text)}
    )
    sign_in(client, owner.email, owner.password)
    emails = {e["user_email"] for e in _events(client, admin_token, page_size=1000)}
    assert owner.email in emails and '=hyperlink("http://evil")@x.com' in emails
    # The CSV export: every cell a spreadsheet would run is made inert.
    exported = client.get("/settings/audit.csv", headers=bearer(admin_token), params={"action": "sign_in_failed"})
    assert exported.status_code == 200 and exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(exported.text)))
    assert rows[0][:6] == ["id", "time_utc", "workspace_id", "user_id", "user_email", "action"]
    assert '\'=hyperlink("http://evil")@x.com' in [r[4] for r in rows[1:]]
    assert all(not cell.startswith(("=", "+", "-", "@")) for r in rows[1:] for cell in r)


def test_nothing_in_the_app_can_change_or_delete_an_audit_event():
    from fastapi.routing import APIRoute, iter_route_contexts

    from app.main import app

    for context in iter_route_contexts(app.routes):
        if isinstance(context.original_route, APIRoute) and "audit" in (context.path or ""):
            assert context.original_route.methods <= {"GET", "HEAD"}, context.path
    # Only the audit service touches the table, and it only adds rows.
    for path in (ROOT / "app").rglob("*.py"):
        source = path.read_text()
        if re.search(r"\bAuditEvent\b", source) and path.relative_to(ROOT).as_posix() not in ("app/models.py", "app/services/audit.py"):
            raise AssertionError(f"{path} uses AuditEvent; only app/services/audit.py may")
    tree = ast.parse((ROOT / "app/services/audit.py").read_text())
    calls = {n.func.attr for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)}
    assert not calls & {"delete", "update", "merge", "execute"}, calls & {"delete", "update", "merge", "execute"}


def test_nul_bytes_and_long_values_are_stored_cut_and_clean(db):
    from app.services import audit

    event = audit.record(db, audit.RequestMeta("1.2.3.4", "x\x00" * 500), None, "sign_in_failed", email="a\x00b@example.com")
    assert (event.user_email, len(event.user_agent), "\x00" in event.user_agent) == ("ab@example.com", 400, False)
    db.rollback()
