"""Rows -> tokenized examples, batches and the rendered view."""

import random

import pytest

from app.domain.task_kinds import PLAIN_PROMPT_FORMAT
from worker.training.data import (
    IGNORE_INDEX,
    MIN_RESPONSE_TOKENS,
    TokenizedExample,
    collate,
    length_grouped_batches,
    padding_fraction,
    render_prompt,
    render_row,
    tokenize_rows,
)

ROWS = [
    ("Where is my parcel?", "It ships on Monday."),
    ("Can I return a jacket?", "Yes, within thirty days, with the receipt."),
]


def _prompt_ids(tokenizer, prompt, add_special_tokens):
    return tokenizer(render_prompt(tokenizer, prompt), add_special_tokens=add_special_tokens)["input_ids"]


def test_labels_mask_exactly_the_prompt_and_response_ends_with_eos(tiny_tokenizer):
    examples = tokenize_rows(tiny_tokenizer, ROWS, max_length=256).examples
    assert len(examples) == 2
    for (prompt, response), example in zip(ROWS, examples):
        n_prompt = len(_prompt_ids(tiny_tokenizer, prompt, add_special_tokens=True))
        response_ids = tiny_tokenizer(response, add_special_tokens=False)["input_ids"]
        assert example.labels[:n_prompt] == [IGNORE_INDEX] * n_prompt
        assert example.labels[n_prompt:] == example.input_ids[n_prompt:]
        assert example.input_ids[n_prompt:] == response_ids + [tiny_tokenizer.eos_token_id]
        assert example.attention_mask == [1] * len(example)
        assert not example.truncated


def test_plain_format_is_used_without_a_chat_template(tiny_tokenizer):
    rendered = render_row(tiny_tokenizer, *ROWS[0])
    assert rendered.prompt_text == PLAIN_PROMPT_FORMAT.format(prompt=ROWS[0][0])
    assert rendered.response_text == ROWS[0][1] + tiny_tokenizer.eos_token
    assert not rendered.truncated and not rendered.dropped


def test_chat_template_renders_the_prompt_without_doubled_special_tokens(tiny_chat_tokenizer):
    tokenizer = tiny_chat_tokenizer
    prompt, response = ROWS[0]
    example = tokenize_rows(tokenizer, [ROWS[0]], max_length=256).examples[0]
    expected_prompt = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False)
    rendered = render_row(tokenizer, prompt, response)
    assert rendered.prompt_text == expected_prompt
    assert rendered.response_text == response + "<|im_end|>"
    start_id = tokenizer.convert_tokens_to_ids("<|im_start|>")
    assert example.input_ids[0] == start_id and example.input_ids[1] != start_id
    assert example.input_ids[-1] == tokenizer.eos_token_id == tokenizer.convert_tokens_to_ids("<|im_end|>")
    n_prompt = rendered.prompt_tokens
    assert example.labels[:n_prompt] == [IGNORE_INDEX] * n_prompt
    assert all(label != IGNORE_INDEX for label in example.labels[n_prompt:])


def test_long_response_is_cut_at_its_end_without_eos(tiny_tokenizer):
    prompt = "Tell me everything about the warranty."
    response = " ".join(["The warranty covers every seam and button for a year."] * 10)
    n_prompt = len(_prompt_ids(tiny_tokenizer, prompt, add_special_tokens=True))
    max_length = n_prompt + 12
    example = tokenize_rows(tiny_tokenizer, [(prompt, response)], max_length).examples[0]
    response_ids = tiny_tokenizer(response, add_special_tokens=False)["input_ids"]
    assert len(example) == max_length
    assert example.truncated
    assert example.input_ids[n_prompt:] == response_ids[:12]  # response start kept, no EOS
    assert example.labels[:n_prompt] == [IGNORE_INDEX] * n_prompt
    rendered = render_row(tiny_tokenizer, prompt, response, max_length=max_length)
    assert rendered.truncated and rendered.response_tokens == 12


def test_row_whose_prompt_fills_max_length_is_dropped(tiny_tokenizer):
    long_prompt = "Please explain the refund policy in detail. " * 20
    n_prompt = len(_prompt_ids(tiny_tokenizer, long_prompt, add_special_tokens=True))
    rows = [ROWS[0], (long_prompt, "Sure, here it is."), ROWS[1]]
    result = tokenize_rows(tiny_tokenizer, rows, max_length=n_prompt + MIN_RESPONSE_TOKENS - 1)
    assert result.dropped_rows == [1]
    assert len(result.examples) == 2
    assert render_row(tiny_tokenizer, *rows[1], max_length=n_prompt).dropped


def test_collate_pads_to_the_longest_and_masks_padding():
    examples = [
        TokenizedExample([5, 6, 7], [1, 1, 1], [IGNORE_INDEX, 6, 7]),
        TokenizedExample([8, 9], [1, 1], [IGNORE_INDEX, 9]),
    ]
    batch = collate(examples, pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 9, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["labels"].tolist() == [[IGNORE_INDEX, 6, 7], [IGNORE_INDEX, 9, IGNORE_INDEX]]


def test_length_grouping_cuts_padding_and_keeps_every_example_once():
    rng = random.Random(1)
    lengths = [rng.randint(5, 250) for _ in range(400)]
    batch_size = 8
    grouped = length_grouped_batches(lengths, batch_size, seed=3)
    assert sorted(i for batch in grouped for i in batch) == list(range(len(lengths)))
    assert all(len(batch) <= batch_size for batch in grouped)

    order = list(range(len(lengths)))
    random.Random(3).shuffle(order)
    unordered = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    assert padding_fraction(grouped, lengths) < padding_fraction(unordered, lengths) / 4

    assert length_grouped_batches(lengths, batch_size, seed=3) == grouped
    assert length_grouped_batches(lengths, batch_size, seed=4) != grouped


def test_max_length_below_two_is_refused(tiny_tokenizer):
    with pytest.raises(ValueError):
        tokenize_rows(tiny_tokenizer, ROWS, max_length=1)
