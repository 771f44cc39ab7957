"""Load a local base model folder, and convert a GGUF file into such a folder."""

from __future__ import annotations

import copy
import errno
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

if TYPE_CHECKING:
    from transformers import AutoModelForSequenceClassification


def pick_device() -> torch.device:
    """CUDA when present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_tokenizer(model_dir: str | os.PathLike):
    """The folder's tokenizer, with a pad token (falls back to eos) so batches can be padded."""
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), trust_remote_code=False)
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def training_dtype(precision: str, device: torch.device) -> torch.dtype:
    """fp32 on a CPU; on CUDA 'auto' picks bf16 where supported, else fp16."""
    if precision == "fp32" or device.type != "cuda":
        return torch.float32
    if precision == "bf16" or (precision == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


def quantization_config(bits: int, compute_dtype: torch.dtype, classification: bool = False):
    """bitsandbytes 4-bit NF4 (double quantized) or 8-bit; heads stay unquantized."""
    from transformers import BitsAndBytesConfig

    # A classifier head and pooler must stay trainable full-precision layers.
    skip = ["classifier", "pooler", "score"] if classification else None
    if bits == 4:
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute_dtype,
            llm_int8_skip_modules=skip,
        )
    if bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)
    raise ValueError(f"Quantization to {bits} bits is not supported; choose 4 or 8.")


def use_exact_cpu_4bit_kernel(model) -> None:
    """Keep bitsandbytes' 4-bit layers on their fp32 dequantize path on a CPU.

    On CPUs with AVX-512 BF16, bitsandbytes repacks a 4-bit weight for a faster bf16 kernel the
    first time a layer runs in eval mode. That kernel's results differ from the training path's
    (by ~0.1-0.3 in the logits of the tiny test model), and training after such an evaluation
    mixes the two; so a run evaluating every N steps would not learn what it measures.
    """
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


class BaseModelUnreadable(Exception):
    """The base model's files are damaged, truncated, missing or not what their names say."""


def _unreadable(exc: BaseException) -> bool:
    """A file problem, as opposed to running out of memory or disk while loading."""
    if type(exc).__name__ == "SafetensorError" or isinstance(exc, json.JSONDecodeError):
        return True
    return isinstance(exc, OSError) and exc.errno not in (errno.ENOSPC, errno.ENOMEM)


def load_base_model(
    model_dir: str | os.PathLike,
    device: torch.device | None = None,
    *,
    task: str = "instruction",
    label_names: list[str] | None = None,
    quantization_bits: int = 0,
    dtype: torch.dtype = torch.float32,
):
    """Load (model, tokenizer) from a local folder onto `device` (CUDA if available, else CPU).

    Causal LM for instruction and text tasks, sequence classification (with the label map in
    the config) for classification; optionally quantized with bitsandbytes. Damaged or missing
    files raise BaseModelUnreadable.
    """
    try:
        return _load_base_model(model_dir, device, task=task, label_names=label_names, quantization_bits=quantization_bits, dtype=dtype)
    except Exception as exc:
        if _unreadable(exc):
            detail = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            raise BaseModelUnreadable(f"The base model's files in {Path(model_dir).name} could not be read ({detail}).") from exc
        raise


def _load_base_model(model_dir, device, *, task, label_names, quantization_bits, dtype):
    device = device or pick_device()
    kwargs = dict(
        dtype=dtype,  # transformers 5 spells it dtype=, not torch_dtype=
        trust_remote_code=False,
        use_safetensors=True,
    )
    if device.type == "cuda":
        kwargs["attn_implementation"] = "sdpa"
    model_class: type[AutoModelForCausalLM] | type[AutoModelForSequenceClassification]
    if task == "classification":
        from transformers import AutoModelForSequenceClassification

        names = list(label_names or [])
        kwargs.update(num_labels=len(names), id2label=dict(enumerate(names)), label2id={name: i for i, name in enumerate(names)})
        model_class = AutoModelForSequenceClassification
    else:
        model_class = AutoModelForCausalLM
    tokenizer = load_tokenizer(model_dir)
    if quantization_bits:
        kwargs["quantization_config"] = quantization_config(
            quantization_bits, dtype if dtype != torch.float16 else torch.float16, task == "classification"
        )
        kwargs["device_map"] = {"": device.index or 0} if device.type == "cuda" else {"": "cpu"}
        model = model_class.from_pretrained(str(model_dir), **kwargs)
        if device.type == "cpu":
            use_exact_cpu_4bit_kernel(model)
    else:
        model = model_class.from_pretrained(str(model_dir), **kwargs)
        model.to(device)
    if task == "classification" and model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id  # to find each row's last real token
    return model, tokenizer


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

    loaded = AutoModelForCausalLM.from_pretrained(source_dir, gguf_file=file_name, dtype=torch.float32, trust_remote_code=False)
    tokenizer = AutoTokenizer.from_pretrained(source_dir, gguf_file=file_name, trust_remote_code=False)
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
        raise ValueError(f"{gguf_path.name} does not match its own config: missing {missing[:5]}, unexpected {unexpected[:5]}")
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
