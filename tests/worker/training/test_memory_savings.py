"""What keeps a CPU LoRA step's memory low (issue 15): batches cut into passes of a token budget
with the same update, and the gated MLP keeping only gate and up.

Tolerance for "the same update": fp32; a split batch sums the same per-token terms in another
order, so gradients agree to ~1e-6 relative; a dropped row or a wrong weighting of the passes
changes them by more than 1e-2.
"""

from __future__ import annotations

import pytest
import torch

from worker.training.data import collate, split_to_token_budget, tokenize_rows
from worker.training.memory import micro_batch_tokens
from worker.training.swiglu import fuse_swiglu


def test_a_batch_is_cut_into_passes_within_the_budget_longest_first():
    lengths = [10, 50, 30, 30, 5, 60]
    parts = split_to_token_budget([0, 1, 2, 3, 4, 5], lengths, 100)
    assert sorted(i for part in parts for i in part) == [0, 1, 2, 3, 4, 5]
    assert all(len(part) * max(lengths[i] for i in part) <= 100 for part in parts)
    assert parts[0][0] == 5  # longest first
    assert split_to_token_budget([0, 1], [500, 400], 100) == [[0], [1]]  # too long for the budget: alone
    assert split_to_token_budget([0, 1, 2], lengths, 0) == [[0, 1, 2]]  # 0: no split


def test_the_automatic_budget_splits_on_a_cpu_only():
    assert micro_batch_tokens({"micro_batch_tokens": 0}, "cpu") == 256
    assert micro_batch_tokens({"micro_batch_tokens": 0}, "cuda") == 0
    assert micro_batch_tokens({"micro_batch_tokens": 1000}, "cuda") == 1000


def _lora_model(model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    return get_peft_model(base, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear"))


def test_passes_within_a_budget_give_the_update_of_the_whole_batch(tiny_model_dir, tiny_tokenizer):
    from worker.training.progress import LoopState
    from worker.training.steps import accumulate_gradients

    rows = [(f"question {i} " * (1 + i % 5), f"answer {i} " * (2 + i % 3)) for i in range(8)]
    examples = tokenize_rows(tiny_tokenizer, rows, 128).examples
    lengths = [len(e) for e in examples]
    pad = tiny_tokenizer.pad_token_id or tiny_tokenizer.eos_token_id

    class Go:
        def should_stop(self):
            return False

    def gradients(parts):
        model = _lora_model(tiny_model_dir).train()
        batches = [collate([examples[i] for i in part], pad) for part in parts]
        loss = accumulate_gradients(model, batches, "cpu", LoopState(), Go())
        return loss, {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    whole_loss, whole = gradients([list(range(8))])
    parts = split_to_token_budget(list(range(8)), lengths, 3 * max(lengths))
    assert len(parts) >= 3
    split_loss, split = gradients(parts)
    assert split_loss == pytest.approx(whole_loss, rel=1e-6)
    for name, grad in whole.items():
        torch.testing.assert_close(split[name], grad, rtol=1e-5, atol=1e-7)


def test_the_fused_gated_mlp_gives_the_same_numbers_and_keeps_less(tiny_model_dir):
    ids = torch.randint(5, 100, (2, 20))

    def run(fused: bool):
        model = _lora_model(tiny_model_dir).train()
        if fused:
            assert fuse_swiglu(model) == model.config.num_hidden_layers
        kept: dict[int, int] = {}
        weights = {p.untyped_storage().data_ptr() for p in model.parameters()}

        def pack(t):
            if t.untyped_storage().data_ptr() not in weights:
                kept[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
        return loss.detach(), grads, sum(kept.values())

    plain_loss, plain_grads, plain_kept = run(False)
    fused_loss, fused_grads, fused_kept = run(True)
    torch.testing.assert_close(fused_loss, plain_loss, rtol=1e-6, atol=1e-7)
    for name, grad in plain_grads.items():
        torch.testing.assert_close(fused_grads[name], grad, rtol=1e-5, atol=1e-7)
    assert fused_kept < plain_kept
