"""Downloads are recorded (who, when); adapters move between draft, approved and archived."""

from __future__ import annotations

import zipfile

from app.db import session_scope
from app.models import Adapter, AdapterDownload, User
from app.services.adapters import ZIP_NAME
from app.services.artifacts import get_artifact_store
from tests.app.helpers import bearer
from tests.conftest import csrf_from, sign_in


def _adapter(workspace_id: int) -> int:
    store = get_artifact_store()
    with session_scope() as db:
        adapter = Adapter(
            workspace_id=workspace_id, name="ship me", technique="lora", base_model="tiny-llama", storage_key="adapters/ship-me"
        )
        db.add(adapter)
        db.flush()
        adapter.storage_key = f"adapters/ship-me-{adapter.id}"
        folder = store.path(adapter.storage_key)
        folder.mkdir(parents=True)
        with zipfile.ZipFile(folder / ZIP_NAME, "w") as archive:
            archive.writestr("adapter_config.json", "{}")
        return adapter.id


def test_downloads_are_recorded_and_status_changes(client, make_user):
    user_id, email, password, token = make_user("shipper")
    with session_scope() as db:
        adapter_id = _adapter(db.get(User, user_id).workspace_id)
    assert client.get(f"/api/v1/adapters/{adapter_id}/download", headers=bearer(token)).status_code == 200
    sign_in(client, email, password)
    assert client.get(f"/adapters/{adapter_id}/download").status_code == 200
    log = client.get(f"/api/v1/adapters/{adapter_id}/downloads", headers=bearer(token)).json()
    assert [entry["user"] for entry in log] == [email, email]
    with session_scope() as db:
        assert db.query(AdapterDownload).filter_by(adapter_id=adapter_id).count() == 2

    assert client.get(f"/api/v1/adapters/{adapter_id}", headers=bearer(token)).json()["status"] == "draft"
    page = client.get("/adapters")
    assert "ship me" in page.text
    client.post(f"/adapters/{adapter_id}/status", data={"status": "approved", "csrf_token": csrf_from(page.text)})
    assert client.get(f"/api/v1/adapters/{adapter_id}", headers=bearer(token)).json()["status"] == "approved"
    archived = client.patch(f"/api/v1/adapters/{adapter_id}", json={"status": "archived"}, headers=bearer(token))
    assert archived.status_code == 200 and archived.json()["status"] == "archived"
    assert "ship me" not in client.get("/adapters").text
    assert "ship me" in client.get("/adapters?archived=true").text
    wrong = client.patch(f"/api/v1/adapters/{adapter_id}", json={"status": "shipped"}, headers=bearer(token))
    assert wrong.status_code == 422 and "draft, approved, archived" in wrong.json()["detail"]
