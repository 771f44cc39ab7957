"""The README.md model card, and that the plain-data modules stay free of torch."""

import subprocess
import sys
from pathlib import Path

from worker.training.model_card import render_model_card


def test_card_renders_with_no_information_at_all():
    card = render_model_card({})
    assert card.startswith("---\nlibrary_name: peft\n")
    assert "PeftModel.from_pretrained(base, " in card
    assert "not recorded" in card


def test_full_card_has_front_matter_data_results_and_usage():
    card = render_model_card(
        {
            "base_model": "HuggingFaceTB/SmolLM2-135M-Instruct",
            "technique": "lora",
            "parameters": {"r": 8, "alpha": 16, "target_modules": "all-linear"},
            "dataset_name": "support.csv",
            "dataset_rows": 1200,
            "dataset_sha256": "ab" * 32,
            "train_loss": 1.23456,
            "validation_loss": 1.5,
            "steps": 150,
            "train_seconds": 754.2,
            "trainable_parameters": 4_884_480,
            "total_parameters": 139_399_488,
        }
    )
    front_matter = card.split("---")[1]
    assert 'base_model: "HuggingFaceTB/SmolLM2-135M-Instruct"' in front_matter
    assert 'tags: ["tailor", "lora"]' in front_matter
    assert "# LoRA adapter for HuggingFaceTB/SmolLM2-135M-Instruct" in card
    for text in (
        "support.csv",
        "1,200",
        "ab" * 32,
        "1.2346",
        "1.5000",
        "150",
        "12 min 34 s",
        "4,884,480",
        "`target_modules` | `all-linear`",
    ):
        assert text in card, text
    assert 'AutoModelForCausalLM.from_pretrained("HuggingFaceTB/SmolLM2-135M-Instruct")' in card
    assert 'PeftModel.from_pretrained(base, "path/to/unzipped/adapter")' in card
    assert "model.generate(" in card
    # The snippet is valid Python.
    snippet = card.split("```python\n")[1].split("```")[0]
    compile(snippet, "snippet", "exec")


def test_spec_and_model_card_import_without_torch():
    code = (
        "import sys, worker.training, worker.training.spec, worker.training.model_card;"
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    repo_root = Path(__file__).resolve().parents[3]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=repo_root)


def test_classification_and_full_fine_tuning_cards_show_how_to_load_them():
    card = render_model_card({"base_model": "minilm", "technique": "lora", "task": "classification", "label_names": ["orders", "returns"]})
    assert 'AutoModelForSequenceClassification.from_pretrained("minilm", num_labels=2)' in card
    assert "tailor_labels.json" in card
    full = render_model_card({"base_model": "smollm2", "technique": "full"})
    assert 'AutoModelForCausalLM.from_pretrained("path/to/unzipped/model")' in full and "PeftModel.from_pretrained" not in full
