"""Writing the trained result: an adapter (or a whole model) in a folder that is never seen
half-written, plus a classifier's label map.

What goes into the folder depends on the technique: its entry in peft_factory.BUILDERS names
one of the writers below, started right after the model is built (PiSSA must keep its
starting adapter then) and closed when the run ends.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

LABELS_FILE = "tailor_labels.json"


class AdapterFiles:
    """adapter_config.json + adapter_model.safetensors; the base model stays as it is."""

    def __init__(self, model=None):
        pass

    def write(self, model, folder: Path, tokenizer=None) -> None:
        model.save_pretrained(str(folder), safe_serialization=True)

    def close(self) -> None:
        pass


class WholeModelFiles(AdapterFiles):
    """Every weight (full fine-tuning): the model's own config and weights, and its tokenizer."""

    def write(self, model, folder: Path, tokenizer=None) -> None:
        model.save_pretrained(str(folder), safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(str(folder))


class PlainLoraFromPissaFiles(AdapterFiles):
    """A PiSSA adapter converted to plain LoRA, so it loads on the unchanged base model.

    The conversion needs the starting adapter: it is kept in a temporary folder from the moment
    the model is built until close().
    """

    def __init__(self, model):
        self.initial_dir = Path(tempfile.mkdtemp(prefix="pissa-init-"))
        model.peft_config["default"].init_lora_weights = True
        model.save_pretrained(str(self.initial_dir))
        model.peft_config["default"].init_lora_weights = "pissa_niter_4"

    def write(self, model, folder: Path, tokenizer=None) -> None:
        model.save_pretrained(str(folder), safe_serialization=True, path_initial_model_for_weight_conversion=str(self.initial_dir))

    def close(self) -> None:
        shutil.rmtree(self.initial_dir, ignore_errors=True)


def save_adapter(model, output_dir: str | os.PathLike, files: AdapterFiles, *, tokenizer=None, label_names=None) -> Path:
    """Write `model` through `files`, never leaving a half-written folder.

    A classifier gets its label map in tailor_labels.json.
    """
    output_dir = Path(output_dir)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.partial-", dir=output_dir.parent))
    try:
        tmp_dir.chmod(0o755)  # mkdtemp makes it private; the final folder should not be
        files.write(model, tmp_dir, tokenizer)
        if label_names is not None:
            (tmp_dir / LABELS_FILE).write_text(json.dumps({"id2label": {str(i): name for i, name in enumerate(label_names)}}, indent=2))
        if output_dir.is_dir() and not any(output_dir.iterdir()):
            output_dir.rmdir()
        if not output_dir.exists():
            os.replace(tmp_dir, output_dir)
        else:
            # Folder already holds other files: move ours in one by one, config last, so a
            # reader that sees the config also sees the weights.
            names = sorted(os.listdir(tmp_dir), key=lambda name: name in ("adapter_config.json", "config.json"))
            for name in names:
                os.replace(tmp_dir / name, output_dir / name)
            tmp_dir.rmdir()
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    return output_dir
