"""Incremental detokenization never splits a multi-byte character; stop strings are held back
until they can be ruled out and never sent."""

from __future__ import annotations

import pytest

from worker.serving.text import IncrementalDecoder, StopText


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


def test_pieces_are_whole_characters_and_add_up_to_the_text(tokenizer):
    text = "Café ☕ crème brûlée, 日本語 and 🤖 emoji"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) > len(text.split())  # byte-level pieces: characters span several tokens
    decoder = IncrementalDecoder(tokenizer)
    pieces = [decoder.push(i) for i in ids] + [decoder.flush()]
    assert all("\ufffd" not in piece for piece in pieces)
    assert "".join(pieces) == tokenizer.decode(ids) == text
    assert sum(1 for p in pieces if p) > 3  # it streams, not one piece at the end


def test_a_stop_string_split_across_pieces_is_never_sent():
    stop = StopText(["###", "END"])
    sent = []
    for piece in ["Hello wor", "ld #", "#", "# more"]:
        text, hit = stop.feed(piece)
        sent.append(text)
        if hit:
            break
    assert "".join(sent) == "Hello world " and hit


def test_held_back_text_is_released_when_it_is_not_a_stop_string():
    stop = StopText(["END"])
    assert stop.feed("the EN") == ("the ", False)
    assert stop.feed("D") == ("", True)
    other = StopText(["END"])
    assert other.feed("the EN") == ("the ", False)
    assert other.feed("ding") == ("ENding", False)
    assert other.feed("E") == ("", False) and other.flush() == "E"
