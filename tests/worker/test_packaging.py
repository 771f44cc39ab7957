"""The adapter package's model card: the vLLM snippet only where vLLM can serve the adapter."""

from __future__ import annotations

import json
import zipfile

import pytest

from worker.packaging import refresh_model_card, write_adapter_package


@pytest.mark.parametrize(
    "task_type, technique, offers_vllm",
    [
        ("CAUSAL_LM", "lora", True),
        ("SEQ_CLS", "lora", False),  # a classifier: vLLM's LoRA serving generates text
        ("CAUSAL_LM", "ia3", False),  # not a LoRA module vLLM can load
    ],
)
def test_the_vllm_snippet_is_offered_only_for_text_generating_lora(tmp_path, task_type, technique, offers_vllm):
    package = tmp_path / "package"
    package.mkdir()
    (package / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "task_type": task_type}))
    (package / "adapter_model.safetensors").write_bytes(b"\0" * 16)
    write_adapter_package(package, package / "adapter.zip", {"technique": technique, "base_model": "smollm2", "task": "x"})
    with zipfile.ZipFile(package / "adapter.zip") as archive:
        assert ("vllm serve" in archive.read("README.md").decode()) is offers_vllm
    # Rewritten after evaluation: still the same decision.
    refresh_model_card(package, technique, "smollm2", {"adapter": {}})
    assert ("vllm serve" in (package / "README.md").read_text()) is offers_vllm
