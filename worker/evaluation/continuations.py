"""Held-out texts of a continued-training job as (prompt, reference) pairs: the start of a text is
the prompt and the words that follow are what the model should write. Pure Python."""

from __future__ import annotations

from collections.abc import Sequence

PROMPT_WORDS = 32
REFERENCE_WORDS = 32
MIN_WORDS = 8


def continuation_pairs(texts: Sequence, prompt_words: int = PROMPT_WORDS, reference_words: int = REFERENCE_WORDS) -> list[tuple[str, str]]:
    """(first part, the rest) of each text: half its words (at most `prompt_words`) as the prompt and
    the next words (at most `reference_words`) as the reference; texts under MIN_WORDS words are skipped."""
    pairs = []
    for text in texts:
        words = str(text[0] if isinstance(text, (tuple, list)) else text).split()
        if len(words) < MIN_WORDS:
            continue
        cut = min(prompt_words, len(words) // 2)
        pairs.append((" ".join(words[:cut]), " ".join(words[cut : cut + reference_words])))
    return pairs
