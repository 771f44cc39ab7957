"""Packaging a trained adapter: model card beside the adapter files, then one zip. No torch."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from worker.training.model_card import render_model_card

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
FULL_MODEL_FILES = ("config.json",)  # a full fine-tune: the whole model (weights may be sharded)


def write_adapter_package(adapter_dir: Path, zip_path: Path, card_info: dict) -> int:
    """Write README.md into adapter_dir and zip the folder to zip_path; returns the zip's size.
    Refuses anything but safetensors weights, so a pickle never ships."""
    missing = [name for name in ADAPTER_FILES if not (adapter_dir / name).is_file()]
    if missing and all((adapter_dir / name).is_file() for name in FULL_MODEL_FILES) and any(adapter_dir.glob("*.safetensors")):
        missing = []
    if missing:
        raise FileNotFoundError(f"The adapter is incomplete: {', '.join(missing)} missing.")
    if card_info.get("base_model"):
        name_base_model(adapter_dir, str(card_info["base_model"]))
    card = render_model_card(card_info) + model_card_extras(
        str(card_info.get("technique") or ""), str(card_info.get("base_model") or ""), generates_text=_generates_text(adapter_dir)
    )
    (adapter_dir / "README.md").write_text(card, encoding="utf-8")
    return zip_folder(adapter_dir, zip_path)


def name_base_model(adapter_dir: Path, base_model: str) -> None:
    """adapter_config.json names the base model by its public id (or catalogue name), never this
    server's folder: PEFT writes the path it loaded from, which means nothing where the zip travels."""
    config_path = adapter_dir / "adapter_config.json"
    if not config_path.is_file():
        return  # a full fine-tune ships the whole model
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = base_model
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def zip_folder(adapter_dir: Path, zip_path: Path) -> int:
    """Zip the folder's files (never the zip itself, a partial file or a pickle) atomically."""
    files = [
        p
        for p in sorted(adapter_dir.rglob("*"))
        if p.is_file() and p != zip_path and not p.name.endswith(".part") and p.suffix not in (".bin", ".pt", ".pth", ".pkl")
    ]
    tmp = zip_path.with_suffix(".zip.part")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in files:
            archive.write(path, path.relative_to(adapter_dir).as_posix())
    tmp.replace(zip_path)
    return zip_path.stat().st_size


# Adapters vLLM serves as LoRA modules (plain low-rank updates in PEFT's LoRA format).
VLLM_TECHNIQUES = {"lora", "rslora", "qlora"}
EXTRAS_MARKER = "<!-- tailor: evaluation and serving -->"
_METRIC_LABELS = {
    "exact_match": "Exact match",
    "token_f1": "Token F1",
    "rouge_l": "ROUGE-L",
    "semantic_similarity": "Meaning similarity (MiniLM)",
    "accuracy": "Accuracy",
    "macro_f1": "Macro-F1",
    "validation_loss": "Validation loss (lower is better)",
    "perplexity": "Perplexity (lower is better)",
}


def _generates_text(adapter_dir: Path) -> bool:
    """False for a classifier (PEFT task type SEQ_CLS): vLLM's LoRA serving generates text."""
    try:
        return json.loads((adapter_dir / "adapter_config.json").read_text()).get("task_type") != "SEQ_CLS"
    except (OSError, ValueError):
        return True


def model_card_extras(technique: str, base_model: str, evaluation: dict | None = None, generates_text: bool = True) -> str:
    """Sections appended to the model card: evaluation with intervals (once evaluated) and a
    vLLM snippet for LoRA adapters that generate text."""
    lines = ["", EXTRAS_MARKER, ""]
    if evaluation and evaluation.get("adapter"):
        lines += _evaluation_section(evaluation)
    if technique in VLLM_TECHNIQUES and generates_text:
        lines += [
            "## Serving with vLLM",
            "",
            "```bash",
            f"vllm serve {base_model} --enable-lora --lora-modules tailor-adapter=./unzipped-adapter",
            "```",
            "",
            "```python",
            "from vllm import LLM, SamplingParams",
            "from vllm.lora.request import LoRARequest",
            "",
            f'llm = LLM(model="{base_model}", enable_lora=True)',
            'out = llm.generate(["Where is my order?"], SamplingParams(max_tokens=128),',
            '                   lora_request=LoRARequest("tailor-adapter", 1, "./unzipped-adapter"))',
            "print(out[0].outputs[0].text)",
            "```",
            "",
        ]
    return "\n".join(lines) if len(lines) > 3 else ""


def _evaluation_section(evaluation: dict) -> list[str]:
    """The metrics table with intervals, against the base model or (classifiers) the majority class,
    and a classifier's confusion matrix."""
    classifier = evaluation.get("base_kind") == "majority_class"
    against = (
        f"always answering the most common training label, \u201c{evaluation.get('baseline_label')}\u201d "
        "(a new classification head starts untrained, so the base model alone is no baseline)"
        if classifier
        else "the base model on the same rows"
    )
    lines = [
        f"## Evaluation on {evaluation.get('rows', '?')} held-out rows",
        "",
        f"95% bootstrap intervals over the rows; compared with {against}.",
        "",
        f"| metric | this adapter | {'majority class' if classifier else 'base model'} |",
        "|---|---|---|",
    ]
    cell = lambda v: f"{v['value']:.3f} [{v['low']:.3f}, {v['high']:.3f}]" if v else "—"  # noqa: E731
    for metric, value in evaluation["adapter"].items():
        lines.append(f"| {_METRIC_LABELS.get(metric, metric)} | {cell(value)} | {cell((evaluation.get('base') or {}).get(metric))} |")
    confusion = evaluation.get("confusion")
    if confusion:
        labels = [str(label).replace("|", "\\|") for label in confusion["labels"]]
        lines += [
            "",
            "Confusion matrix (rows: true label, columns: predicted label):",
            "",
            "| true \\ predicted | " + " | ".join(labels) + " |",
            "|---" * (len(labels) + 1) + "|",
        ]
        lines += [f"| {label} | " + " | ".join(str(n) for n in row) + " |" for label, row in zip(labels, confusion["matrix"])]
    return lines + [""]


def refresh_model_card(package_dir: Path, technique: str, base_model: str, evaluation: dict) -> int:
    """Rewrite the card's appended sections with the evaluation, then the zip next to it."""
    card_path = package_dir / "README.md"
    card = card_path.read_text(encoding="utf-8").split("\n" + EXTRAS_MARKER)[0].rstrip("\n") + "\n"
    card_path.write_text(card + model_card_extras(technique, base_model, evaluation, _generates_text(package_dir)), encoding="utf-8")
    return zip_folder(package_dir, package_dir / "adapter.zip")
