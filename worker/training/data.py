"""(prompt, response) rows -> tokenized examples, padded batches and length-grouped order.

Loss is taken on the response only: labels are -100 on every prompt token. The prompt is
rendered with the tokenizer's chat template when it has one (what a chat model expects at
inference time), otherwise with the plain prompt format of app/domain/task_kinds.py.

Truncation policy (max_length counts prompt + response + EOS):
- the prompt's start is always kept and the response is cut at its end; a cut response does
  not get an EOS, because teaching the model to stop mid-answer would be wrong;
- a row whose prompt leaves room for fewer than MIN_RESPONSE_TOKENS response tokens (or for the
  whole response, when it is shorter) is dropped and counted, since a prompt cut at its end
  loses the template's answer header and would teach a malformed format.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from app.domain.task_kinds import get_task_kind, render_plain_prompt

IGNORE_INDEX = -100
MIN_RESPONSE_TOKENS = 8


@dataclass
class TokenizedExample:
    """One training example; `labels` is -100 on prompt tokens."""

    input_ids: list[int]
    attention_mask: list[int]
    labels: list[int]
    truncated: bool = False
    label: int | None = None  # classification: the class id (then `labels` is unused)
    position_ids: list[int] | None = None  # packed rows: positions restart at 0 for each example

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


def render_prompt(tokenizer, prompt: str, system: str | None = None) -> str:
    """The prompt text before tokenization: chat template if any, else the plain format.

    `system` (a system message or context for the row) becomes the chat's system turn, or a
    "### Context:" block in the plain format.
    """
    if has_chat_template(tokenizer):
        messages = [{"role": "user", "content": prompt}]
        if system:
            messages.insert(0, {"role": "system", "content": system})
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return render_plain_prompt(prompt, system)


def _prompt_adds_special_tokens(tokenizer) -> bool:
    # A chat template already writes its special tokens (BOS, role markers) into the text;
    # the plain format lets the tokenizer add its usual ones (e.g. a Llama BOS).
    return not has_chat_template(tokenizer)


def eos_token_id(tokenizer) -> int:
    if tokenizer.eos_token_id is None:
        raise ValueError(
            "The tokenizer has no end-of-sequence token, so answer ends cannot be marked; use a base model whose tokenizer defines one."
        )
    return int(tokenizer.eos_token_id)


def pad_token_id(tokenizer) -> int:
    """The pad token, falling back to EOS (padding is masked out of attention and loss)."""
    if tokenizer.pad_token_id is not None:
        return int(tokenizer.pad_token_id)
    return eos_token_id(tokenizer)


def _assemble(prompt_ids: list[int], response_ids: list[int], eos_id: int, max_length: int) -> TokenizedExample | None:
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


def tokenize_rows(tokenizer, rows: Sequence[tuple[str, str]], max_length: int) -> TokenizedRows:
    """Tokenize (prompt, response) rows; see the module docstring for truncation and drops."""
    if max_length < 2:
        raise ValueError("max_length must be at least 2 tokens")
    if not rows:
        return TokenizedRows(examples=[])
    prompts = [render_prompt(tokenizer, row[0], row[2] if len(row) > 2 else None) for row in rows]
    responses = [row[1] for row in rows]
    prompt_ids = tokenizer(prompts, add_special_tokens=_prompt_adds_special_tokens(tokenizer))["input_ids"]
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
    p_ids = tokenizer(render_prompt(tokenizer, prompt), add_special_tokens=_prompt_adds_special_tokens(tokenizer))["input_ids"]
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


def tokenize_texts(tokenizer, texts: Sequence, max_length: int) -> TokenizedRows:
    """Continued training: each text (+ EOS) cut into max_length chunks, loss on every token.

    A text is chunked on its own (chunks never mix two texts); a final chunk shorter than two
    tokens carries nothing to predict and is left out.
    """
    if max_length < 2:
        raise ValueError("max_length must be at least 2 tokens")
    texts = [t[0] if isinstance(t, (tuple, list)) else t for t in texts]
    if not texts:
        return TokenizedRows(examples=[])
    eos_id = tokenizer.eos_token_id
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None and tokenizer.bos_token_id != eos_id else []
    result = TokenizedRows(examples=[])
    for index, ids in enumerate(tokenizer(list(texts), add_special_tokens=False)["input_ids"]):
        ids = bos + list(ids) + ([eos_id] if eos_id is not None else [])
        chunks = [ids[i : i + max_length] for i in range(0, len(ids), max_length)]
        chunks = [chunk for chunk in chunks if len(chunk) >= 2]
        if not chunks:
            result.dropped_rows.append(index)
        for chunk in chunks:
            result.examples.append(TokenizedExample(chunk, [1] * len(chunk), list(chunk), truncated=len(chunks) > 1))
    return result


def label_names_of(rows: Sequence) -> list[str]:
    """The sorted distinct labels of (text, label) rows: index = class id."""
    return sorted({str(row[1]) for row in rows})


def tokenize_classification(tokenizer, rows: Sequence, max_length: int, label_names: Sequence[str]) -> TokenizedRows:
    """(text, label) rows -> examples holding the class id; long texts keep their start."""
    ids_of = {name: i for i, name in enumerate(label_names)}
    result = TokenizedRows(examples=[])
    if not rows:
        return result
    encoded = tokenizer([row[0] for row in rows], truncation=True, max_length=max_length)["input_ids"]
    for index, (row, ids) in enumerate(zip(rows, encoded)):
        label = ids_of.get(str(row[1]))
        if label is None or not ids:
            result.dropped_rows.append(index)
            continue
        result.examples.append(TokenizedExample(list(ids), [1] * len(ids), [], label=label))
    return result


# The training function of each task kind (app/domain/task_kinds.py), by its key:
# (tokenizer, rows, max_length, label names or None) -> examples.
TOKENIZERS: dict[str, Callable[..., TokenizedRows]] = {
    "instruction": lambda tokenizer, rows, max_length, label_names: tokenize_rows(tokenizer, rows, max_length),
    "text": lambda tokenizer, rows, max_length, label_names: tokenize_texts(tokenizer, rows, max_length),
    "classification": lambda tokenizer, rows, max_length, label_names: tokenize_classification(
        tokenizer, rows, max_length, label_names or label_names_of(rows)
    ),
    # Preference tuning trains on pairs (worker/training/preference.py); measured as a language
    # model (evaluation's held-out loss, estimates) it is the prompt with its chosen / good answer.
    "preference": lambda tokenizer, rows, max_length, label_names: tokenize_rows(
        tokenizer, [(r[0], r[1], *r[3:]) for r in rows], max_length
    ),
    "feedback": lambda tokenizer, rows, max_length, label_names: tokenize_rows(
        tokenizer, [(r[0], r[1], *r[3:]) for r in rows if r[2] == "good"], max_length
    ),
}


def tokenize_for_task(tokenizer, task: str, rows: Sequence, max_length: int, label_names: Sequence[str] | None = None) -> TokenizedRows:
    """Rows of any task kind -> examples (TaskKind.row_shape gives the row shapes)."""
    return TOKENIZERS[get_task_kind(task).key](tokenizer, rows, max_length, label_names)


def pack_examples(examples: Sequence[TokenizedExample], max_length: int) -> list[TokenizedExample]:
    """Pack short examples into rows of at most max_length tokens (first fit, longest first).

    Positions restart at 0 for each example; transformers turns such position ids (with no 2-D
    attention mask) into a block-diagonal causal mask, so packed examples never see each other.
    The first label of each example is masked: it would be predicted from the previous one's end.
    """
    bins: list[list[TokenizedExample]] = []
    room: list[int] = []
    for example in sorted(examples, key=len, reverse=True):
        for index, free in enumerate(room):
            if len(example) <= free:
                bins[index].append(example)
                room[index] -= len(example)
                break
        else:
            bins.append([example])
            room.append(max_length - len(example))
    packed = []
    for members in bins:
        input_ids, labels, positions = [], [], []
        for example in members:
            input_ids += example.input_ids
            labels += [IGNORE_INDEX] + list(example.labels[1:])
            positions += list(range(len(example)))
        packed.append(
            TokenizedExample(input_ids, [1] * len(input_ids), labels, truncated=any(e.truncated for e in members), position_ids=positions)
        )
    return packed


def collate(examples: Sequence[TokenizedExample], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch to its longest example; padding is masked and ignored by the loss.

    Classification batches carry one class id per example in `labels` (shape [batch]).
    """
    width = max(len(example) for example in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    for row, example in enumerate(examples):
        n = len(example)
        input_ids[row, :n] = torch.tensor(example.input_ids, dtype=torch.long)
        attention_mask[row, :n] = 1
        if example.label is None:
            labels[row, :n] = torch.tensor(example.labels, dtype=torch.long)
    if examples[0].label is not None:
        labels = torch.tensor([example.label for example in examples], dtype=torch.long)
    batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
    if examples[0].position_ids is not None:
        # The padding tail of a packed row counts as one more sequence starting at 0.
        positions = torch.zeros((len(examples), width), dtype=torch.long)
        for row, example in enumerate(examples):
            n = len(example)
            positions[row, :n] = torch.tensor(example.position_ids, dtype=torch.long)
            positions[row, n:] = torch.arange(width - n)
        batch["position_ids"] = positions
    return batch


def length_grouped_batches(lengths: Sequence[int], batch_size: int, seed: int, group_batches: int = 16) -> list[list[int]]:
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


def split_to_token_budget(indices: Sequence[int], lengths: Sequence[int], budget: int) -> list[list[int]]:
    """Cut one batch into micro-batches of at most `budget` padded tokens each (rows x longest
    row), longest rows first; a row longer than the budget goes alone. 0 = no split."""
    if budget <= 0 or len(indices) <= 1:
        return [list(indices)]
    parts: list[list[int]] = []
    for i in sorted(indices, key=lambda i: lengths[i], reverse=True):
        if parts and (len(parts[-1]) + 1) * lengths[parts[-1][0]] <= budget:
            parts[-1].append(i)
        else:
            parts.append([i])
    return parts


def padding_fraction(batches: Sequence[Sequence[int]], lengths: Sequence[int]) -> float:
    """Share of the padded batch cells that are padding (0 = no waste)."""
    padded = sum(max(lengths[i] for i in batch) * len(batch) for batch in batches if batch)
    real = sum(lengths[i] for batch in batches for i in batch)
    return 0.0 if padded == 0 else 1.0 - real / padded
