"""Shipping an adapter to llama.cpp: offered for plain LoRA on a Llama base (with the reason shown
where it is not), built in the background, downloaded and recorded."""

from __future__ import annotations

import time

import gguf
from safetensors.numpy import load_file

from app.db import session_scope
from app.models import Adapter, User
from app.services.artifacts import get_artifact_store
from tests.app.helpers import bearer
from tests.conftest import sign_in


def _export_state(adapter_id: int) -> str | None:
    with session_scope() as db:
        return db.get(Adapter, adapter_id).gguf_export_state


def test_lora_adapter_exported_as_gguf_for_llama_cpp(facts_owner, train_adapter, client, tmp_path, worker_process):
    user_id, email, password, token, dataset_id = facts_owner
    adapter_id = train_adapter(dataset_id, "ship to llama.cpp", max_steps=4)
    with session_scope() as db:
        workspace_id = db.get(User, user_id).workspace_id
        soft = Adapter(workspace_id=workspace_id, name="soft prompt", technique="prompt_tuning", base_model="tiny-llama", storage_key="x")
        dora = Adapter(workspace_id=workspace_id, name="dora one", technique="dora", base_model="tiny-llama", storage_key="y")
        db.add_all([soft, dora])
        db.flush()
        soft_id, dora_id = soft.id, dora.id
        storage_key = db.get(Adapter, adapter_id).storage_key

    sign_in(client, email, password)
    page = client.get("/adapters").text
    assert f'action="/adapters/{adapter_id}/export-gguf"' in page
    assert f'action="/adapters/{soft_id}/export-gguf"' not in page and f'action="/adapters/{dora_id}/export-gguf"' not in page
    assert "No GGUF for soft prompt: llama.cpp loads plain LoRA adapters, not Prompt tuning." in page
    assert "No GGUF for dora one: llama.cpp loads plain LoRA adapters; DoRA changes the model" in page

    refused = client.post(f"/api/v1/adapters/{soft_id}/export-gguf", headers=bearer(token))
    assert refused.status_code == 422 and "plain LoRA" in refused.json()["detail"]
    assert client.get(f"/api/v1/adapters/{adapter_id}/gguf", headers=bearer(token)).status_code == 404
    queued = client.post(f"/api/v1/adapters/{adapter_id}/export-gguf", headers=bearer(token))
    assert queued.status_code == 202 and queued.json()["gguf_export_state"] == "queued"

    # The real worker takes the export from the queue (running it here as well would race it).
    deadline = time.monotonic() + 180
    while (state := _export_state(adapter_id)) in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert state == "done", state

    response = client.get(f"/api/v1/adapters/{adapter_id}/gguf", headers=bearer(token))
    assert response.status_code == 200 and response.headers["content-type"] == "application/octet-stream"
    (tmp_path / "a.gguf").write_bytes(response.content)
    reader = gguf.GGUFReader(str(tmp_path / "a.gguf"))
    field = reader.fields["general.type"]
    assert bytes(field.parts[field.data[0]]).decode() == "adapter"
    lora_matrices = load_file(str(get_artifact_store().path(storage_key) / "adapter_model.safetensors"))
    assert len(reader.tensors) == len(lora_matrices) and all(t.name.startswith("blk.") for t in reader.tensors)
    downloads = client.get(f"/api/v1/adapters/{adapter_id}/downloads", headers=bearer(token)).json()
    assert [d["user"] for d in downloads] == [email]
    assert f'href="/adapters/{adapter_id}/gguf"' in client.get("/adapters").text
