"""The zip travels: adapter_config.json and the model card name the base model by its public id
(never this server's folder), and the card tells how to call the adapter on Tailor's endpoint."""

from __future__ import annotations

import json
import zipfile

from app.base_models import DEMO_MODEL_KEY, list_base_models
from worker.packaging import write_adapter_package


def test_the_demo_model_has_its_public_id(settings):
    demo = next(m for m in list_base_models(settings) if m.key == DEMO_MODEL_KEY)
    assert demo.public_name == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_a_model_folder_names_its_public_id_in_tailor_json(settings):
    folder = settings.models_dir / "imported-with-id"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text("{}")
    (folder / "tailor.json").write_text(json.dumps({"label": "Imported", "public_id": "acme/model-7b"}))
    plain = settings.models_dir / "imported-plain"
    plain.mkdir(parents=True, exist_ok=True)
    (plain / "config.json").write_text("{}")
    names = {m.key: m.public_name for m in list_base_models(settings)}
    assert names["imported-with-id"] == "acme/model-7b" and names["imported-plain"] == "imported-plain"


def test_the_package_names_the_public_base_and_the_endpoint(tmp_path):
    package = tmp_path / "package"
    package.mkdir()
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": "/srv/tailor/var/models/smollm2-135m-instruct",
        "r": 8,
    }
    (package / "adapter_config.json").write_text(json.dumps(config))
    (package / "adapter_model.safetensors").write_bytes(b"\0" * 16)
    info = {
        "technique": "lora",
        "base_model": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "task": "instruction",
        "serving_model": "northwind-support-lora-3",
        "serving_url": "https://tailor.example.com/v1",
    }
    write_adapter_package(package, package / "adapter.zip", info)
    with zipfile.ZipFile(package / "adapter.zip") as archive:
        shipped = json.loads(archive.read("adapter_config.json"))
        card = archive.read("README.md").decode()
    assert shipped == {**config, "base_model_name_or_path": "HuggingFaceTB/SmolLM2-135M-Instruct"}
    assert "/srv/tailor" not in card and 'base_model: "HuggingFaceTB/SmolLM2-135M-Instruct"' in card
    assert 'AutoModelForCausalLM.from_pretrained("HuggingFaceTB/SmolLM2-135M-Instruct")' in card
    assert "vllm serve HuggingFaceTB/SmolLM2-135M-Instruct" in card
    assert 'base_url="https://tailor.example.com/v1"' in card and 'model="northwind-support-lora-3"' in card
    assert "curl https://tailor.example.com/v1/chat/completions" in card
