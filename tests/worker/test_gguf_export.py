"""The llama.cpp LoRA export, checked without llama.cpp: the adapter's GGUF tensors, applied the
way llama.cpp applies them (W += alpha / rank * B @ A, in GGUF layout) to a GGUF copy of the base,
and read back through transformers' independent GGUF loader, give PEFT's logits."""

from __future__ import annotations

import json

import gguf
import numpy as np
import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from worker.gguf_export import GgufExportError, gguf_tensor_name, llama_permute, write_lora_gguf

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.fixture(scope="module")
def gqa_llama(tmp_path_factory):
    """A tiny Llama with grouped-query attention (4 query heads, 2 key/value heads), so the q and k
    permutations differ."""
    folder = tmp_path_factory.mktemp("gqa-llama")
    config = LlamaConfig(
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=320,
        max_position_embeddings=128,
        tie_word_embeddings=False,
        initializer_range=0.1,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def _adapter(base_dir, out_dir, **lora):
    torch.manual_seed(1)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(base_dir),
        LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, init_lora_weights=False, **lora),
    )
    with torch.no_grad():  # updates large enough that a wrong layout shows in the logits
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.mul_(20)
    model.save_pretrained(out_dir)
    return out_dir


def _write_base_gguf(base_dir, path, merged_deltas: dict[str, np.ndarray] | None = None) -> None:
    """The HF base as llama.cpp's converter writes it (names, q/k permutation, metadata), plus deltas."""
    from safetensors.numpy import load_file

    config = json.loads((base_dir / "config.json").read_text())
    heads, kv_heads, layers = config["num_attention_heads"], config["num_key_value_heads"], config["num_hidden_layers"]
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(layers)
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(config["hidden_size"] // heads)
    writer.add_rope_freq_base(config.get("rope_theta") or config.get("rope_parameters", {}).get("rope_theta", 10000.0))
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_vocab_size(config["vocab_size"])
    for hf_name, weights in sorted(load_file(str(base_dir / "model.safetensors")).items()):
        target = gguf_tensor_name(hf_name.removesuffix(".weight"), "llama", layers)
        if ".attn_q." in target:
            weights = llama_permute(weights, heads, heads)
        elif ".attn_k." in target:
            weights = llama_permute(weights, heads, kv_heads)
        if merged_deltas and target in merged_deltas:
            weights = weights + merged_deltas[target]
        writer.add_tensor(target, np.ascontiguousarray(weights.astype(np.float32)))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _field(reader, key):
    field = reader.fields[key]
    value = field.parts[field.data[0]]
    return bytes(value).decode() if field.types[0] == gguf.GGUFValueType.STRING else float(value[0])


def _llama_cpp_deltas(adapter_gguf) -> dict[str, np.ndarray]:
    """What llama.cpp adds to each base tensor: alpha / rank * B @ A (rank read from the tensors)."""
    reader = gguf.GGUFReader(str(adapter_gguf))
    alpha = _field(reader, "adapter.lora.alpha")
    tensors = {t.name: np.array(t.data) for t in reader.tensors}
    deltas = {}
    for name in tensors:
        if name.endswith(".lora_a"):
            base = name.removesuffix(".lora_a")
            a, b = tensors[name], tensors[base + ".lora_b"]
            deltas[base] = alpha / a.shape[0] * (b @ a)
    return deltas


def _logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=torch.tensor([[1, 17, 42, 99, 5, 250, 7, 64, 3, 11]])).logits


@pytest.mark.parametrize(
    "lora",
    [{}, {"use_rslora": True}, {"alpha_pattern": {"k_proj": 2}, "rank_pattern": {"down_proj": 2}}],
    ids=["lora", "rslora", "per-module-alpha-and-rank"],
)
def test_gguf_adapter_applied_like_llama_cpp_gives_peft_logits(gqa_llama, tmp_path, lora):
    adapter_dir = _adapter(gqa_llama, tmp_path / "adapter", **lora)
    info = write_lora_gguf(adapter_dir, json.loads((gqa_llama / "config.json").read_text()), tmp_path / "adapter.gguf")

    reader = gguf.GGUFReader(str(tmp_path / "adapter.gguf"))
    assert _field(reader, "general.architecture") == "llama" and _field(reader, "general.type") == "adapter"
    assert _field(reader, "adapter.type") == "lora" and _field(reader, "adapter.lora.alpha") == pytest.approx(info.alpha)
    names = {t.name for t in reader.tensors}
    assert len(names) == info.tensors == 2 * 7 * 2
    assert {"blk.0.attn_q.weight.lora_a", "blk.0.attn_q.weight.lora_b", "blk.1.ffn_down.weight.lora_b"} <= names
    shapes = {t.name: tuple(int(n) for n in t.shape) for t in reader.tensors}  # GGUF order: ne0 (in) first
    assert shapes["blk.0.attn_k.weight.lora_a"] == (128, 4) and shapes["blk.0.attn_k.weight.lora_b"] == (4, 64)

    _write_base_gguf(gqa_llama, tmp_path / "base.gguf")
    _write_base_gguf(gqa_llama, tmp_path / "merged.gguf", _llama_cpp_deltas(tmp_path / "adapter.gguf"))
    base_hf = AutoModelForCausalLM.from_pretrained(gqa_llama).eval()
    expected_base = _logits(base_hf)
    expected = _logits(PeftModel.from_pretrained(base_hf, str(adapter_dir)).eval())
    from_gguf_base = _logits(AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="base.gguf", dtype=torch.float32).eval())
    from_gguf = _logits(AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="merged.gguf", dtype=torch.float32).eval())

    torch.testing.assert_close(from_gguf_base, expected_base, atol=1e-4, rtol=1e-4)  # the base's GGUF copy is faithful
    assert (expected - expected_base).abs().max() > 0.5  # the adapter changes the answer...
    torch.testing.assert_close(from_gguf, expected, atol=1e-3, rtol=1e-3)  # ...and llama.cpp would apply it (float32 sums)


def test_unpermuted_q_and_k_would_not_match(gqa_llama, tmp_path):
    """The permutation matters: without it lora_b of q/k lands on the wrong rotary pairs."""
    adapter_dir = _adapter(gqa_llama, tmp_path / "adapter")
    w = np.arange(64 * 4, dtype=np.float32).reshape(64, 4)
    assert not np.array_equal(llama_permute(w, 4, 2), w) and not np.array_equal(llama_permute(w, 4, 2), llama_permute(w, 4, 4))
    write_lora_gguf(adapter_dir, json.loads((gqa_llama / "config.json").read_text()), tmp_path / "a.gguf")
    tensors = {t.name: np.array(t.data) for t in gguf.GGUFReader(str(tmp_path / "a.gguf")).tensors}
    from safetensors.numpy import load_file

    raw = load_file(str(adapter_dir / "adapter_model.safetensors"))
    b_k = raw["base_model.model.model.layers.0.self_attn.k_proj.lora_B.weight"]
    np.testing.assert_array_equal(tensors["blk.0.attn_k.weight.lora_b"], llama_permute(b_k, 4, 2))
    np.testing.assert_array_equal(
        tensors["blk.0.attn_v.weight.lora_b"], raw["base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight"]
    )


def test_adapters_llama_cpp_cannot_load_are_refused_with_a_reason(gqa_llama, tmp_path):
    config = json.loads((gqa_llama / "config.json").read_text())
    dora = _adapter(gqa_llama, tmp_path / "dora", use_dora=True)
    with pytest.raises(GgufExportError, match="DoRA"):
        write_lora_gguf(dora, config, tmp_path / "x.gguf")
    with pytest.raises(GgufExportError, match="Llama-architecture"):
        write_lora_gguf(_adapter(gqa_llama, tmp_path / "plain"), {**config, "model_type": "bert"}, tmp_path / "y.gguf")
    assert not (tmp_path / "x.gguf").exists() and not (tmp_path / "y.gguf").exists()
