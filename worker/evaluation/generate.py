"""Greedy (or sampled) answers from a causal LM, batched with left padding."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from worker.training.data import render_prompt


@torch.no_grad()
def generate_answers(
    model,
    tokenizer,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 96,
    batch_size: int = 8,
    temperature: float = 0.0,
    seed: int = 0,
    continuation: bool = False,
) -> list[str]:
    """The model's answer to each prompt, rendered exactly as in training (chat template or plain);
    with `continuation` the prompt is raw text to continue, as a text (continued training) job sees it."""
    answers: list[str] = []
    for start in range(0, len(prompts), batch_size):
        answers.extend(
            _generate_batch(model, tokenizer, prompts[start : start + batch_size], max_new_tokens, temperature, seed, continuation)
        )
    return answers


def _generate_batch(
    model, tokenizer, prompts: Sequence[str], max_new_tokens: int, temperature: float, seed: int, continuation: bool = False
) -> list[str]:
    texts = list(prompts) if continuation else [render_prompt(tokenizer, p) for p in prompts]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    previous_side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # generation continues from the right end of every row
    try:
        # Raw text starts with the tokenizer's BOS as in training; a rendered prompt writes its own.
        batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=continuation)
    finally:
        tokenizer.padding_side = previous_side
    batch = {k: v.to(model.device) for k, v in batch.items()}
    sampling = {"do_sample": True, "temperature": temperature, "top_p": 0.95} if temperature > 0 else {"do_sample": False}
    if temperature > 0:
        torch.manual_seed(seed)
    out = model.generate(**batch, max_new_tokens=max_new_tokens, pad_token_id=pad, eos_token_id=tokenizer.eos_token_id, **sampling)
    new_tokens = out[:, batch["input_ids"].shape[1] :]
    return [tokenizer.decode(row, skip_special_tokens=True).strip() for row in new_tokens]


def stream_answer(model, tokenizer, prompt: str, *, max_new_tokens: int = 128, temperature: float = 0.0) -> Iterator[str]:
    """Yield the answer's text piece by piece as it is generated (for the playground)."""
    from threading import Thread

    from transformers import TextIteratorStreamer

    text = render_prompt(tokenizer, prompt)
    inputs = tokenizer(text, return_tensors="pt", add_special_tokens=False).to(model.device)
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    sampling = {"do_sample": True, "temperature": temperature, "top_p": 0.95} if temperature > 0 else {"do_sample": False}
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    thread = Thread(
        target=model.generate, kwargs=dict(**inputs, max_new_tokens=max_new_tokens, streamer=streamer, pad_token_id=pad, **sampling)
    )
    thread.start()
    yield from streamer
    thread.join()
