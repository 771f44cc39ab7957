"""The adapters page works out each adapter kind's GGUF answer once, not once per row (each look
scans the models folder and the import path: the page's main cost with 50 adapters)."""

from __future__ import annotations

import re

from app.db import session_scope
from app.models import Adapter, User
from app.services import exports
from tests.app.helpers import bearer


def test_gguf_reasons_are_worked_out_once_per_technique_and_base_model(client, make_user, tiny_model_dir, monkeypatch):
    user = make_user()
    with session_scope() as db:
        workspace_id = db.get(User, user.id).workspace_id
        kinds = [("lora", "tiny-llama"), ("prompt_tuning", "tiny-llama"), ("lora", "not-installed")]
        for i in range(12):
            technique, base = kinds[i % 3]
            db.add(
                Adapter(
                    workspace_id=workspace_id,
                    name=f"{technique} {base} {i}",
                    technique=technique,
                    base_model=base,
                    storage_key=f"adapters/page-{i}",
                    metrics={"validation_loss": 1.23456} if i == 0 else {},
                )
            )
    looks = []
    real = exports.gguf_unavailable_reason
    monkeypatch.setattr(exports, "gguf_unavailable_reason", lambda settings, adapter: looks.append(adapter.id) or real(settings, adapter))
    page = client.get("/adapters", headers=bearer(user.token))
    assert page.status_code == 200
    assert len(looks) == 3  # one per kind, for 12 rows
    assert page.text.count("export-gguf") == 4  # the plain LoRA adapters on the installed Llama
    assert "llama.cpp loads plain LoRA adapters, not Prompt tuning." in page.text
    assert "The base model &#39;not-installed&#39; is not installed here" in page.text
    assert "1.2346" in page.text and page.text.count(">—<") >= 11  # the validation loss, or a dash
    tokens = set(re.findall(r'name="csrf_token" value="([^"]+)"', page.text))
    assert len(tokens) == 1  # every row's forms carry the session's one token
