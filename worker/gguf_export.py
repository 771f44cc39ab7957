"""A LoRA adapter as a GGUF file that llama.cpp loads with `--lora`, written in the layout of
llama.cpp's own `convert_lora_to_gguf.py`: `general.type=adapter`, `adapter.type=lora`,
`adapter.lora.alpha`, and for every adapted weight `<GGUF name>.lora_a` (rank x in) and
`.lora_b` (out x rank) in float32. llama.cpp stores a Llama's q/k projection rows permuted
(its rotary embedding pairs neighbours), so lora_b of q and k is permuted the same way.

Needs only the adapter files and the base model's config.json, never the base weights.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

ADAPTER_PREFIX = "base_model.model."
# Architectures whose tensor layout this writer knows (transformers model_type -> llama.cpp arch).
GGUF_ARCHITECTURES = {"llama": "llama"}


class GgufExportError(ValueError):
    """An adapter that cannot become a llama.cpp LoRA; the message says why, in plain words."""


@dataclass(frozen=True)
class GgufAdapterInfo:
    tensors: int
    alpha: float
    rank: int
    size_bytes: int


def llama_permute(weights: np.ndarray, n_head: int, n_head_kv: int) -> np.ndarray:
    """The row order llama.cpp's converter gives q_proj (n_head) and k_proj (n_head_kv) weights."""
    heads = n_head_kv if n_head_kv != n_head else n_head
    return weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)


def gguf_tensor_name(hf_module: str, arch: str, n_blocks: int) -> str:
    """E.g. model.layers.3.self_attn.q_proj -> blk.3.attn_q.weight."""
    name = _name_map(arch, n_blocks).get_name(hf_module + ".weight", try_suffixes=(".weight",))
    if name is None:
        raise GgufExportError(f"llama.cpp has no tensor for the adapted layer {hf_module!r}.")
    return name


@lru_cache(maxsize=8)
def _name_map(arch: str, n_blocks: int):
    import gguf

    return gguf.get_tensor_name_map(_gguf_arch(arch), n_blocks)  # costly to build: once per model shape


def _gguf_arch(arch: str):
    import gguf

    return next(key for key, value in gguf.MODEL_ARCH_NAMES.items() if value == arch)


def gguf_unsupported_reason(adapter_config: dict, base_config: dict) -> str | None:
    """Why this adapter cannot be written for llama.cpp, or None when it can."""
    model_type = base_config.get("model_type")
    if model_type not in GGUF_ARCHITECTURES:
        return f"llama.cpp adapters are written here for Llama-architecture bases only; this base is {model_type or 'unknown'}."
    if adapter_config.get("peft_type") != "LORA":
        return f"llama.cpp loads plain LoRA adapters; this one is {adapter_config.get('peft_type') or 'not a LoRA'}."
    if adapter_config.get("use_dora"):
        return "llama.cpp cannot apply DoRA's magnitude vectors; export a merged model instead."
    if adapter_config.get("modules_to_save"):
        return "The adapter also trains whole layers (modules_to_save), which a llama.cpp LoRA cannot carry."
    if adapter_config.get("lora_bias"):
        return "llama.cpp LoRA adapters carry no bias terms."
    return None


def _lora_weights(adapter_dir: Path) -> dict[str, dict[str, np.ndarray]]:
    """{hf module name: {"A": rank x in, "B": out x rank}} from adapter_model.safetensors."""
    from safetensors.numpy import load_file

    modules: dict[str, dict[str, np.ndarray]] = {}
    for key, value in load_file(str(adapter_dir / "adapter_model.safetensors")).items():
        match = re.fullmatch(r"(.+)\.lora_([AB])(?:\.[^.]+)?\.weight", key)
        if match is None:
            raise GgufExportError(f"The adapter holds {key!r}, which is not a LoRA A or B matrix; llama.cpp cannot load it.")
        module = match.group(1).removeprefix(ADAPTER_PREFIX)
        modules.setdefault(module, {})[match.group(2)] = value.astype(np.float32)
    return modules


def _module_alpha(module: str, config: dict) -> float:
    """PEFT's alpha for one module (alpha_pattern keys match the end of the module's name)."""
    for pattern, alpha in (config.get("alpha_pattern") or {}).items():
        if re.match(rf"(.*\.)?{pattern}$", module):
            return float(alpha)
    return float(config.get("lora_alpha", 8))


def write_lora_gguf(adapter_dir: str | Path, base_config: dict, out_path: str | Path, name: str = "tailor-adapter") -> GgufAdapterInfo:
    """Write the adapter in adapter_dir as a llama.cpp LoRA GGUF at out_path.

    llama.cpp scales each update by alpha / rank with one alpha per file; PEFT's own scaling
    (alpha / rank, alpha / sqrt(rank) for rsLoRA, per-module alpha or rank patterns) is kept exactly:
    where a module's scale differs from the file's alpha / rank, its lora_b carries the factor.
    """
    import gguf

    adapter_dir = Path(adapter_dir)
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    reason = gguf_unsupported_reason(config, base_config)
    if reason:
        raise GgufExportError(reason)
    arch = GGUF_ARCHITECTURES[base_config["model_type"]]
    n_blocks = int(base_config["num_hidden_layers"])
    n_head = int(base_config["num_attention_heads"])
    n_head_kv = int(base_config.get("num_key_value_heads") or n_head)
    modules = _lora_weights(adapter_dir)
    if not modules:
        raise GgufExportError("The adapter holds no LoRA matrices.")

    def scale_of(module: str, rank: int) -> float:
        alpha = _module_alpha(module, config)
        return alpha / (math.sqrt(rank) if config.get("use_rslora") else rank)

    # One alpha for the file: the one that reproduces the first module's PEFT scale.
    first_module, first = next(iter(modules.items()))
    file_alpha = scale_of(first_module, first["A"].shape[0]) * first["A"].shape[0]
    writer = gguf.GGUFWriter(str(out_path), arch)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, file_alpha)
    writer.add_name(name)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    for module, pair in modules.items():
        if set(pair) != {"A", "B"}:
            raise GgufExportError(f"The adapter's {module} has only lora_{next(iter(pair))}.")
        lora_a, lora_b = pair["A"], pair["B"]
        rank = lora_a.shape[0]
        correction = scale_of(module, rank) * rank / file_alpha
        if not math.isclose(correction, 1.0, rel_tol=1e-9):
            lora_b = lora_b * np.float32(correction)
        target = gguf_tensor_name(module, arch, n_blocks)
        if target == "output.weight" and base_config.get("tie_word_embeddings"):
            raise GgufExportError(
                "The adapter changes the output layer, which this base shares with its embeddings; llama.cpp ignores it there."
            )
        if ".attn_q." in target:
            lora_b = llama_permute(lora_b, n_head, n_head)
        elif ".attn_k." in target:
            lora_b = llama_permute(lora_b, n_head, n_head_kv)
        writer.add_tensor(f"{target}.lora_a", np.ascontiguousarray(lora_a))
        writer.add_tensor(f"{target}.lora_b", np.ascontiguousarray(lora_b))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return GgufAdapterInfo(
        tensors=2 * len(modules), alpha=file_alpha, rank=int(first["A"].shape[0]), size_bytes=Path(out_path).stat().st_size
    )
