"""The chunked loss equals the plain one in value and gradients, without the full logits.

Tolerance: every number is fp32. The plain loss sums N per-token cross-entropies of a
log-softmax over V logits; the chunked one computes the same terms in another order
(logsumexp per chunk, gradients as softmax - one_hot). fp32 has a unit roundoff of 6e-8, and
summation error grows at most like sqrt(N)..N times that over N terms; with N <= 200 and V = 3000
a relative difference of 1e-5 is ~10x the worst such error while a wrong chunk boundary, a
dropped token or a missing gradient term changes results by far more than 1e-3.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from worker.training.chunked_loss import (
    hidden_states_instead_of_logits,
    linear_cross_entropy_per_token,
    linear_cross_entropy_sum,
)
from worker.training.data import IGNORE_INDEX

RTOL, ATOL = 1e-5, 1e-6


def _inputs(tokens=150, hidden=32, vocab=3000, seed=0, bias=True):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(tokens, hidden, generator=g, requires_grad=True)
    w = (torch.randn(vocab, hidden, generator=g) * 0.2).requires_grad_(True)
    b = (torch.randn(vocab, generator=g) * 0.1).requires_grad_(True) if bias else None
    t = torch.randint(0, vocab, (tokens,), generator=g)
    t[torch.rand(tokens, generator=g) < 0.4] = IGNORE_INDEX  # prompt tokens carry no loss
    return h, w, b, t


def _plain(h, w, b, t):
    return F.cross_entropy(F.linear(h, w, b).float(), t, ignore_index=IGNORE_INDEX, reduction="sum")


@pytest.mark.parametrize("chunk", [1, 7, 64, 4096])
def test_loss_and_gradients_equal_the_plain_cross_entropy(chunk):
    h, w, b, t = _inputs()
    plain = _plain(h, w, b, t)
    plain.backward()
    expected = [x.grad.clone() for x in (h, w, b)]
    for x in (h, w, b):
        x.grad = None
    chunked = linear_cross_entropy_sum(h, w, t, b, chunk_tokens=chunk, use_liger=False)
    (chunked * 0.5).backward()  # the incoming gradient is applied in backward
    torch.testing.assert_close(chunked, plain, rtol=RTOL, atol=ATOL)
    for got, want in zip((h.grad, w.grad, b.grad), expected):
        torch.testing.assert_close(got, want * 0.5, rtol=RTOL, atol=ATOL)


def test_frozen_weight_gets_no_gradient_and_no_labels_gives_zero():
    h, w, _, t = _inputs(bias=False)
    w.requires_grad_(False)
    linear_cross_entropy_sum(h, w, t, use_liger=False).backward()
    assert w.grad is None and h.grad is not None
    empty = linear_cross_entropy_sum(h, w, torch.full_like(t, IGNORE_INDEX), use_liger=False)
    assert float(empty.detach()) == 0.0


def test_per_token_losses_for_evaluation_equal_the_plain_ones():
    h, w, b, t = _inputs()
    with torch.no_grad():
        expected = F.cross_entropy(F.linear(h, w, b), t, ignore_index=IGNORE_INDEX, reduction="none")
    torch.testing.assert_close(linear_cross_entropy_per_token(h, w, t, b, chunk_tokens=13), expected, rtol=RTOL, atol=ATOL)


def test_a_tiny_llama_trains_on_the_same_loss_and_gradients_without_full_logits(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from worker.training.steps import batch_loss_sum

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa")
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, model.config.vocab_size, (3, 20), generator=g)
    mask = torch.ones_like(ids)
    mask[2, 14:] = 0
    labels = ids.clone()
    labels[:, :8] = IGNORE_INDEX
    labels[mask == 0] = IGNORE_INDEX
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}

    logits = model(input_ids=ids, attention_mask=mask).logits
    plain = F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.size(-1)), labels[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
    )
    plain.backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)

    seen = {}
    head = model.get_output_embeddings()
    head.register_forward_hook(lambda _m, _i, out: seen.update(shape=tuple(out.shape)))
    chunked = batch_loss_sum(model, batch)
    chunked.backward()
    assert seen["shape"][-1] == model.config.hidden_size  # the head returned hidden states, not logits
    assert "forward" not in head.__dict__  # and is itself again afterwards
    torch.testing.assert_close(chunked, plain, rtol=RTOL, atol=ATOL)
    for name, param in model.named_parameters():
        if name in expected:
            # Whole-tensor relative difference: single elements of a gradient summed over 60
            # tokens and 30 layers can be near zero, where an element-wise ratio means nothing.
            difference = float((param.grad - expected[name]).norm() / expected[name].norm().clamp_min(1e-12))
            assert difference < 1e-5, (name, difference)


def test_models_whose_logits_are_more_than_the_head_keep_the_plain_loss(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with hidden_states_instead_of_logits(model) as head:
        assert head is model.get_output_embeddings()
    model.config.final_logit_softcapping = 30.0
    with hidden_states_instead_of_logits(model) as head:
        assert head is None


def test_held_out_losses_per_example_equal_the_plain_ones(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from worker.evaluation.losses import example_losses
    from worker.training.data import TokenizedExample

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    g = torch.Generator().manual_seed(2)
    examples = []
    for n in (9, 14, 5):
        ids = torch.randint(3, model.config.vocab_size, (n,), generator=g).tolist()
        examples.append(TokenizedExample(input_ids=ids, attention_mask=[1] * n, labels=[IGNORE_INDEX] * 3 + ids[3:]))
    got = example_losses(model, examples, pad_id=0, batch_size=2)
    with torch.no_grad():
        for (loss, count), example in zip(got, examples):
            logits = model(input_ids=torch.tensor([example.input_ids])).logits[0, :-1]
            want = F.cross_entropy(logits, torch.tensor(example.labels[1:]), ignore_index=IGNORE_INDEX, reduction="sum")
            assert count == len(example.input_ids) - 3
            assert abs(loss - float(want)) <= 1e-5 * float(want)
