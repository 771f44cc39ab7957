"""The merged export gives the same logits as base + adapter."""

from __future__ import annotations

import zipfile

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from app.db import session_scope
from app.models import Adapter
from app.services.artifacts import get_artifact_store
from app.services.exports import merged_key, request_merged_export
from tests.app.helpers import bearer
from worker.export import run_merged_export


def test_merged_model_matches_base_plus_adapter(facts_owner, train_adapter, tiny_model_dir, tmp_path, client):
    *_, token, dataset_id = facts_owner
    adapter_id = train_adapter(dataset_id, "to merge", max_steps=10)
    assert run_merged_export(adapter_id) == "done"
    store = get_artifact_store()
    with zipfile.ZipFile(store.path(merged_key(adapter_id))) as archive:
        names = archive.namelist()
        assert "merged-model/config.json" in names and any(n.endswith(".safetensors") for n in names)
        archive.extractall(tmp_path)
    with session_scope() as db:
        adapter_dir = store.path(db.get(Adapter, adapter_id).storage_key)

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    inputs = tokenizer("What colour is the Ridge tent?", return_tensors="pt")
    with torch.no_grad():
        merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged-model")(**inputs).logits
        plugged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), str(adapter_dir))(**inputs).logits
        base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)(**inputs).logits
    assert torch.allclose(merged, plugged, atol=1e-4)
    assert not torch.allclose(merged, base, atol=1e-3)
    response = client.get(f"/api/v1/adapters/{adapter_id}/merged", headers=bearer(token))
    assert response.status_code == 200 and response.headers["content-type"] == "application/zip"


def test_prompt_tuning_adapters_are_not_offered_a_merge(facts_owner, train_adapter):
    with session_scope() as db:
        adapter = Adapter(workspace_id=1, name="soft prompt", technique="prompt_tuning", base_model="tiny-llama", storage_key="x")
        with pytest.raises(ValueError, match="cannot be merged"):
            request_merged_export(db, adapter)
