"""LoRA's dropout fused into its A matrix: the same numbers as dropout then linear with the same
mask, the same distribution as torch's dropout, a boolean mask as the only extra tensor kept for
backward, and unchanged adapter files.

Tolerance: fp32 throughout; the fused op applies the 1/(1-p) scale after the matmul instead of
before, so sums of 40 terms round differently: a few units of 6e-8 per term, up to ~3e-6 relative.
1e-5 allows that and is far below what a wrong mask, scale or transposition would change (>1e-2).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from worker.training.lora_dropout import DropoutLinear, dropout_then_linear, fuse_lora_dropout


def test_output_and_gradients_equal_dropout_then_linear_with_the_same_mask():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 17, 40, generator=g, requires_grad=True)
    w = torch.randn(8, 40, generator=g, requires_grad=True)
    grad_out = torch.randn(3, 17, 8, generator=g)
    torch.manual_seed(123)
    fused = dropout_then_linear(x, w, 0.3)
    fused.backward(grad_out)
    got = (fused.detach(), x.grad.clone(), w.grad.clone())
    x.grad = w.grad = None
    torch.manual_seed(123)  # the same draw, taken the way the fused op takes it
    keep = torch.rand_like(x, dtype=torch.float32) >= 0.3
    plain = F.linear(x * keep / 0.7, w)
    plain.backward(grad_out)
    for a, b in zip(got, (plain.detach(), x.grad, w.grad)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert 0 < int((~keep).sum()) < keep.numel()  # the mask really dropped something


def test_values_are_kept_with_probability_one_minus_p_and_scaled():
    layer = nn.Linear(1, 1, bias=False)
    layer.__class__ = DropoutLinear
    layer.p = 0.25
    with torch.no_grad():
        layer.weight.fill_(1.0)
    torch.manual_seed(0)
    x = torch.ones(200_000, 1, requires_grad=True)
    out = layer(x).detach()
    kept = out != 0
    torch.testing.assert_close(out[kept], torch.full_like(out[kept], 1 / 0.75))
    # 200,000 draws: the kept share's standard error is 0.001; 0.005 is five of them.
    assert abs(float(kept.float().mean()) - 0.75) < 0.005
    layer.eval()
    assert torch.equal(layer(x), x)  # eval: a plain linear layer


def test_a_peft_lora_model_keeps_only_a_boolean_mask_and_saves_the_same_files(tiny_model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    def model():
        torch.manual_seed(0)
        base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
        return get_peft_model(base, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.1, target_modules="all-linear")).train()

    def saved_bytes(m) -> tuple[int, set]:
        kept: dict[int, tuple[int, torch.dtype]] = {}
        weights = {p.untyped_storage().data_ptr() for p in m.parameters()}

        def pack(t):
            key = t.untyped_storage().data_ptr()
            if key not in weights:
                kept[key] = (t.untyped_storage().nbytes(), t.dtype)
            return t

        ids = torch.randint(5, 100, (2, 24))
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            m(input_ids=ids).logits.sum()
        return sum(n for n, _ in kept.values()), {d for _, d in kept.values()}

    plain = model()
    plain_bytes, _ = saved_bytes(plain)
    fused = model()
    n = fuse_lora_dropout(fused)
    assert n == sum(1 for m in fused.modules() if isinstance(m, DropoutLinear)) > 0
    assert not any(isinstance(m, nn.Dropout) and m.p > 0 for m in fused.modules())
    fused_bytes, dtypes = saved_bytes(fused)
    assert torch.bool in dtypes and fused_bytes < 0.8 * plain_bytes, (fused_bytes, plain_bytes)
    # Same parameter names, same adapter file keys and config (plain PEFT loads it as before).
    assert [k for k, _ in fused.named_parameters()] == [k for k, _ in plain.named_parameters()]
    fused.save_pretrained(tmp_path / "fused")
    plain.save_pretrained(tmp_path / "plain")
    from safetensors.torch import load_file

    assert (
        load_file(tmp_path / "fused" / "adapter_model.safetensors").keys()
        == load_file(tmp_path / "plain" / "adapter_model.safetensors").keys()
    )
    assert (tmp_path / "fused" / "adapter_config.json").read_text() == (tmp_path / "plain" / "adapter_config.json").read_text()


def test_dora_and_dropout_free_layers_keep_peft_s_forward(tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    dora = get_peft_model(base, LoraConfig(r=4, lora_dropout=0.1, use_dora=True, target_modules="all-linear"))
    assert fuse_lora_dropout(dora) == 0
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    no_dropout = get_peft_model(base, LoraConfig(r=4, lora_dropout=0.0, target_modules="all-linear"))
    assert fuse_lora_dropout(no_dropout) == 0
