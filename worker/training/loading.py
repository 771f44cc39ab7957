"""Load a local base model folder, and convert a GGUF file into such a folder."""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def pick_device() -> torch.device:
    """CUDA when present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_tokenizer(model_dir: str | os.PathLike):
    """The folder's tokenizer, with a pad token (falls back to eos) so batches can be padded."""
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), trust_remote_code=False)
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_base_model(model_dir: str | os.PathLike, device: torch.device | None = None):
    """Load (model, tokenizer) from a local folder in fp32 on CUDA if available, else CPU."""
    device = device or pick_device()
    model = AutoModelForCausalLM.from_pretrained(
        str(model_dir),
        dtype=torch.float32,  # transformers 5 spells it dtype=, not torch_dtype=
        trust_remote_code=False,
        use_safetensors=True,
    )
    model.to(device)
    return model, load_tokenizer(model_dir)


def convert_gguf_to_folder(gguf_path: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Dequantize a GGUF file into an fp32 safetensors folder with its tokenizer.

    The folder is written under a temporary name next to `out_dir` and renamed at the end,
    so a half-finished conversion never looks like a model. Returns `out_dir`.
    """
    gguf_path = Path(gguf_path)
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(f"{out_dir} already exists; remove it or choose another folder")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    source_dir, file_name = str(gguf_path.parent), gguf_path.name

    loaded = AutoModelForCausalLM.from_pretrained(
        source_dir, gguf_file=file_name, dtype=torch.float32, trust_remote_code=False
    )
    tokenizer = AutoTokenizer.from_pretrained(
        source_dir, gguf_file=file_name, trust_remote_code=False
    )
    # save_pretrained refuses a GGUF-loaded model, so rebuild a plain one from its config.
    config = copy.deepcopy(loaded.config)
    # The GGUF loader leaves quantization_config={"quant_method": "gguf"} in the config; kept,
    # it would make every later load of the folder a "quantized" GGUF model again.
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, trust_remote_code=False)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    # Tied output embeddings may be absent from one side; anything else is a broken file.
    missing = [k for k in missing if k != "lm_head.weight" or not config.tie_word_embeddings]
    if missing or unexpected:
        raise ValueError(
            f"{gguf_path.name} does not match its own config: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    if getattr(config, "tie_word_embeddings", False):
        model.tie_weights()
    del loaded

    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        tmp_dir.chmod(0o755)  # mkdtemp makes it private; the final folder should not be
        model.save_pretrained(tmp_dir, safe_serialization=True)
        tokenizer.save_pretrained(tmp_dir)
        os.replace(tmp_dir, out_dir)  # an empty out_dir is replaced atomically too
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    return out_dir


def _main() -> None:  # pragma: no cover - set-up tool
    import argparse

    parser = argparse.ArgumentParser(description="Convert a GGUF model file into a folder.")
    parser.add_argument("gguf_path")
    parser.add_argument("out_dir")
    args = parser.parse_args()
    started = time.perf_counter()
    convert_gguf_to_folder(args.gguf_path, args.out_dir)
    print(f"converted into {args.out_dir} in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":  # pragma: no cover
    _main()
