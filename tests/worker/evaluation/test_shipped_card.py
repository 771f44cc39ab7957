"""The shipped model card and the adapter record name the base model's revision and source."""

from __future__ import annotations

import zipfile

from app.base_models import model_fingerprint
from app.db import session_scope
from app.models import Adapter, Job
from app.services.adapters import adapter_zip_path
from app.services.artifacts import get_artifact_store


def test_card_and_adapter_record_the_base_model_revision(facts_owner, train_adapter, tiny_model_dir):
    *_, dataset_id = facts_owner
    adapter_id = train_adapter(dataset_id, "with revision", max_steps=2)
    revision = model_fingerprint(tiny_model_dir)
    assert revision.startswith("sha256:") and len(revision) == 7 + 64
    with session_scope() as db:
        adapter = db.get(Adapter, adapter_id)
        assert adapter.metrics["base_model_revision"] == revision
        assert adapter.metrics["base_model_source"] == "local folder tiny-llama"
        assert db.get(Job, adapter.job_id).result["reproducibility"]["base_model_revision"] == revision
        with zipfile.ZipFile(adapter_zip_path(get_artifact_store(), adapter)) as archive:
            card = archive.read("README.md").decode()
    assert f"- Revision: `{revision}`" in card and "- Source: local folder tiny-llama" in card
