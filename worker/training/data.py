"""(prompt, response) rows -> tokenized examples, padded batches and length-grouped order.

Loss is taken on the response only: labels are -100 on every prompt token. The prompt is
rendered with the tokenizer's chat template when it has one (what a chat model expects at
inference time), otherwise with PLAIN_PROMPT_FORMAT.

Truncation policy (max_length counts prompt + response + EOS):
- the prompt's start is always kept and the response is cut at its end; a cut response does
  not get an EOS, because teaching the model to stop mid-answer would be wrong;
- a row whose prompt leaves room for fewer than MIN_RESPONSE_TOKENS response tokens (or for the
  whole response, when it is shorter) is dropped and counted, since a prompt cut at its end
  loses the template's answer header and would teach a malformed format.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Sequence

import torch

from worker.training.spec import PLAIN_PROMPT_FORMAT

IGNORE_INDEX = -100
MIN_RESPONSE_TOKENS = 8


@dataclass
class TokenizedExample:
    """One training example; `labels` is -100 on prompt tokens."""

    input_ids: list[int]
    attention_mask: list[int]
    labels: list[int]
    truncated: bool = False

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass
class TokenizedRows:
    """The examples kept, and the indices of rows dropped because their prompt was too long."""

    examples: list[TokenizedExample]
    dropped_rows: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class RenderedRow:
    """A row exactly as the model sees it: decoded prompt and response tokens."""

    prompt_text: str
    response_text: str
    prompt_tokens: int
    response_tokens: int
    truncated: bool
    dropped: bool


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def render_prompt(tokenizer, prompt: str) -> str:
    """The prompt text before tokenization: chat template if any, else the plain format."""
    if has_chat_template(tokenizer):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
        )
    return PLAIN_PROMPT_FORMAT.format(prompt=prompt)


def _prompt_adds_special_tokens(tokenizer) -> bool:
    # A chat template already writes its special tokens (BOS, role markers) into the text;
    # the plain format lets the tokenizer add its usual ones (e.g. a Llama BOS).
    return not has_chat_template(tokenizer)


def eos_token_id(tokenizer) -> int:
    if tokenizer.eos_token_id is None:
        raise ValueError(
            "The tokenizer has no end-of-sequence token, so answer ends cannot be marked; "
            "use a base model whose tokenizer defines one."
        )
    return int(tokenizer.eos_token_id)


def pad_token_id(tokenizer) -> int:
    """The pad token, falling back to EOS (padding is masked out of attention and loss)."""
    if tokenizer.pad_token_id is not None:
        return int(tokenizer.pad_token_id)
    return eos_token_id(tokenizer)


def _assemble(
    prompt_ids: list[int], response_ids: list[int], eos_id: int, max_length: int
) -> TokenizedExample | None:
    """Join prompt + response + EOS within max_length; None when the row must be dropped."""
    full_response = response_ids + [eos_id]
    room = max_length - len(prompt_ids)
    if room < min(MIN_RESPONSE_TOKENS, len(full_response)):
        return None
    truncated = len(full_response) > room
    kept_response = response_ids[:room] if truncated else full_response
    input_ids = prompt_ids + kept_response
    return TokenizedExample(
        input_ids=input_ids,
        attention_mask=[1] * len(input_ids),
        labels=[IGNORE_INDEX] * len(prompt_ids) + list(kept_response),
        truncated=truncated,
    )


def tokenize_rows(
    tokenizer, rows: Sequence[tuple[str, str]], max_length: int
) -> TokenizedRows:
    """Tokenize (prompt, response) rows; see the module docstring for truncation and drops."""
    if max_length < 2:
        raise ValueError("max_length must be at least 2 tokens")
    if not rows:
        return TokenizedRows(examples=[])
    prompts = [render_prompt(tokenizer, prompt) for prompt, _ in rows]
    responses = [response for _, response in rows]
    prompt_ids = tokenizer(prompts, add_special_tokens=_prompt_adds_special_tokens(tokenizer))[
        "input_ids"
    ]
    response_ids = tokenizer(responses, add_special_tokens=False)["input_ids"]
    eos_id = eos_token_id(tokenizer)
    result = TokenizedRows(examples=[])
    for index, (p_ids, r_ids) in enumerate(zip(prompt_ids, response_ids)):
        example = _assemble(list(p_ids), list(r_ids), eos_id, max_length)
        if example is None:
            result.dropped_rows.append(index)
        else:
            result.examples.append(example)
    return result


def render_row(tokenizer, prompt: str, response: str, max_length: int = 256) -> RenderedRow:
    """Show one row exactly as the model will see it (decoded tokens, special tokens kept)."""
    p_ids = tokenizer(
        render_prompt(tokenizer, prompt), add_special_tokens=_prompt_adds_special_tokens(tokenizer)
    )["input_ids"]
    r_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    example = _assemble(list(p_ids), list(r_ids), eos_token_id(tokenizer), max_length)
    if example is None:
        return RenderedRow(
            prompt_text=tokenizer.decode(p_ids, skip_special_tokens=False),
            response_text="",
            prompt_tokens=len(p_ids),
            response_tokens=0,
            truncated=True,
            dropped=True,
        )
    n_prompt = len(p_ids)
    kept_response = example.input_ids[n_prompt:]
    return RenderedRow(
        prompt_text=tokenizer.decode(example.input_ids[:n_prompt], skip_special_tokens=False),
        response_text=tokenizer.decode(kept_response, skip_special_tokens=False),
        prompt_tokens=n_prompt,
        response_tokens=len(kept_response),
        truncated=example.truncated,
        dropped=False,
    )


def collate(examples: Sequence[TokenizedExample], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch to its longest example; padding is masked and ignored by the loss."""
    width = max(len(example) for example in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    for row, example in enumerate(examples):
        n = len(example)
        input_ids[row, :n] = torch.tensor(example.input_ids, dtype=torch.long)
        attention_mask[row, :n] = 1
        labels[row, :n] = torch.tensor(example.labels, dtype=torch.long)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def length_grouped_batches(
    lengths: Sequence[int], batch_size: int, seed: int, group_batches: int = 16
) -> list[list[int]]:
    """Batches of example indices with similar lengths, in a seeded random order.

    Indices are shuffled, cut into groups of `batch_size * group_batches`, each group is sorted
    by length and cut into batches, and the batches are shuffled. Grouping (rather than one
    global sort) keeps batch composition varying from one seed (epoch) to the next.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    group_size = batch_size * max(1, group_batches)
    batches: list[list[int]] = []
    for start in range(0, len(order), group_size):
        group = sorted(order[start : start + group_size], key=lambda i: lengths[i], reverse=True)
        batches.extend(group[i : i + batch_size] for i in range(0, len(group), batch_size))
    rng.shuffle(batches)
    return batches


def padding_fraction(batches: Sequence[Sequence[int]], lengths: Sequence[int]) -> float:
    """Share of the padded batch cells that are padding (0 = no waste)."""
    padded = sum(max(lengths[i] for i in batch) * len(batch) for batch in batches if batch)
    real = sum(lengths[i] for batch in batches for i in batch)
    return 0.0 if padded == 0 else 1.0 - real / padded
