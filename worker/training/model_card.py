"""README.md model card for a downloaded adapter (plain text, no torch)."""

from __future__ import annotations

import json
from typing import Any

from app.domain.serving import usage_snippets
from app.domain.task_kinds import DEFAULT_TASK, PLAIN_PROMPT_FORMAT, TASK_KINDS

_UNKNOWN = "not recorded"
# How technique keys are written in prose; unknown keys are shown as given.
_DISPLAY_NAMES = {
    "lora": "LoRA",
    "qlora": "QLoRA",
    "dora": "DoRA",
    "rslora": "rsLoRA",
    "pissa": "LoRA (PiSSA start)",
    "adalora": "AdaLoRA",
    "loha": "LoHa",
    "lokr": "LoKr",
    "vera": "VeRA",
    "ia3": "IA³",
    "prompt_tuning": "Prompt tuning",
    "prefix_tuning": "Prefix tuning",
    "p_tuning": "P-tuning",
    "full": "Fully fine-tuned model",
}


def _number(value: Any, digits: int = 4) -> str:
    if value is None:
        return _UNKNOWN
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return _UNKNOWN
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes} min {secs} s"
    if minutes:
        return f"{minutes} min {secs} s"
    return f"{seconds:.1f} s"


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _yaml_string(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid YAML scalar, quotes and all escaped


def render_model_card(info: dict) -> str:
    """Markdown model card with YAML front matter; every key of `info` is optional.

    Keys: base_model, base_model_revision, base_model_source, technique, parameters, dataset_name,
    dataset_rows, dataset_sha256, train_loss, validation_loss, steps, train_seconds,
    trainable_parameters, total_parameters.
    """
    base_model = str(info.get("base_model") or "BASE_MODEL")
    technique = str(info.get("technique") or "lora")
    parameters = info.get("parameters") or {}
    dataset_name = info.get("dataset_name")

    tags = ["tailor", technique.lower()]
    front_matter = [
        "---",
        "library_name: peft",
        f"base_model: {_yaml_string(base_model)}",
        f"tags: [{', '.join(_yaml_string(tag) for tag in dict.fromkeys(tags))}]",
        "---",
    ]

    title = f"{_DISPLAY_NAMES.get(technique.lower(), technique)} adapter for {base_model}"
    if dataset_name:
        title += f", trained on {dataset_name}"

    lines = [*front_matter, "", f"# {title}", ""]
    lines += [
        "This adapter was trained with Tailor using "
        "[PEFT](https://github.com/huggingface/peft). It holds only the adapter weights; "
        "load the base model first, then the adapter on top of it.",
        "",
        "## Base model",
        "",
        f"- `{base_model}`",
        f"- Revision: `{info['base_model_revision']}`" if info.get("base_model_revision") else f"- Revision: {_UNKNOWN}",
        *([f"- Source: {info['base_model_source']}"] if info.get("base_model_source") else []),
        "",
        "## Technique",
        "",
        f"- Technique: **{technique}**",
    ]
    if parameters:
        lines += ["", "| Parameter | Value |", "| --- | --- |"]
        lines += [f"| `{key}` | `{_cell(value)}` |" for key, value in parameters.items()]
    else:
        lines.append(f"- Parameters: {_UNKNOWN}")

    lines += [
        "",
        "## Data",
        "",
        f"- Dataset: {dataset_name or _UNKNOWN}",
        f"- Rows: {_number(info.get('dataset_rows'))}",
    ]
    if info.get("dataset_sha256"):
        lines.append(f"- SHA-256: `{info['dataset_sha256']}`")
    if info.get("validation_summary"):
        lines.append(f"- Validation: {info['validation_summary']}")

    trainable, total = info.get("trainable_parameters"), info.get("total_parameters")
    share = ""
    if isinstance(trainable, int) and isinstance(total, int) and total > 0:
        share = f" ({100 * trainable / total:.2f}% of {total:,})"
    lines += [
        "",
        "## Results",
        "",
        "| Metric | Value |",
        "| --- | --- |",
        f"| Train loss | {_number(info.get('train_loss'))} |",
        f"| Validation loss | {_number(info.get('validation_loss'))} |",
        f"| Optimizer steps | {_number(info.get('steps'))} |",
        f"| Training time | {_duration(info.get('train_seconds'))} |",
        f"| Trainable parameters | {_number(trainable)}{share} |",
        "",
        "## Usage",
        "",
        "Unzip the download into a folder, then:",
        "",
    ]
    lines += _usage(info, base_model)
    lines += _serving(info)
    return "\n".join(lines)


def _serving(info: dict) -> list[str]:
    """Calling the adapter on Tailor's OpenAI-compatible endpoint (once it is approved there)."""
    model, url = info.get("serving_model"), info.get("serving_url")
    if not model or not url:
        return []
    snippets = usage_snippets(str(url), str(model))
    return [
        "## Calling it on Tailor",
        "",
        f"Once approved in Tailor, this adapter answers on Tailor's OpenAI-compatible endpoint `{url}` as the model "
        f"`{model}` (an API token with the `serve` scope from Tailor's tokens page).",
        "",
        "```bash",
        snippets["curl"],
        "```",
        "",
        "```python",
        snippets["python"],
        "```",
        "",
        "Any OpenAI-compatible client:",
        "",
        "```",
        snippets["any"],
        "```",
        "",
    ]


def _usage(info: dict, base_model: str) -> list[str]:
    """The usage snippet for the task and technique: classification, a full model, or an adapter."""
    kind = TASK_KINDS.get(info.get("task") or DEFAULT_TASK) or TASK_KINDS[DEFAULT_TASK]
    technique = str(info.get("technique") or "lora").lower()
    if kind.has_labels:
        labels = info.get("label_names") or []
        load = (
            ['model = AutoModelForSequenceClassification.from_pretrained("path/to/unzipped/model")']
            if technique == "full"
            else [
                f'base = AutoModelForSequenceClassification.from_pretrained("{base_model}", num_labels={len(labels) or "N"})',
                'model = PeftModel.from_pretrained(base, "path/to/unzipped/adapter")',
            ]
        )
        return [
            "```python",
            "import json",
            "from peft import PeftModel",
            "from transformers import AutoModelForSequenceClassification, AutoTokenizer",
            "",
            f'tokenizer = AutoTokenizer.from_pretrained("{base_model}")',
            *load,
            'labels = json.load(open("path/to/unzipped/adapter/tailor_labels.json"))["id2label"]',
            'inputs = tokenizer("Text to classify", return_tensors="pt")',
            "print(labels[str(int(model(**inputs).logits.argmax(-1)))])",
            "```",
            "",
        ]
    if technique == "full":
        load = [
            'model = AutoModelForCausalLM.from_pretrained("path/to/unzipped/model")',
            'tokenizer = AutoTokenizer.from_pretrained("path/to/unzipped/model")',
        ]
    else:
        load = [
            f'base = AutoModelForCausalLM.from_pretrained("{base_model}")',
            f'tokenizer = AutoTokenizer.from_pretrained("{base_model}")',
            'model = PeftModel.from_pretrained(base, "path/to/unzipped/adapter")',
        ]
    if not kind.prompted:  # a text to continue
        return [
            "```python",
            "from peft import PeftModel",
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            "",
            *load,
            "",
            'inputs = tokenizer("Our new autumn range", return_tensors="pt")',
            "outputs = model.generate(**inputs, max_new_tokens=100)",
            "print(tokenizer.decode(outputs[0], skip_special_tokens=True))",
            "```",
            "",
        ]
    return [
        "```python",
        "from peft import PeftModel",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        *load,
        "",
        'question = "Your question here"',
        "# The prompt format the adapter was trained with:",
        "if tokenizer.chat_template:",
        "    prompt = tokenizer.apply_chat_template(",
        '        [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False',
        "    )",
        "else:",
        f"    prompt = {PLAIN_PROMPT_FORMAT!r}.format(prompt=question)",
        'inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=not tokenizer.chat_template)',
        "outputs = model.generate(**inputs, max_new_tokens=100)",
        'print(tokenizer.decode(outputs[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))',
        "```",
        "",
    ]
