"""Small synthetic preference and feedback sets a tiny model can learn in a few steps: the
preferred answers share a polite style, the rejected ones a curt one."""

from __future__ import annotations

import random

ITEMS = ["jacket", "shirt", "coat", "dress", "parcel", "invoice", "refund", "order", "card", "package"]
QUESTIONS = ["where is my {}", "can you check my {}", "what about the {}", "please help with my {}", "when does the {} arrive"]


def _good(rng: random.Random, item: str) -> str:
    return f"thank you kindly , we will check your {item} today and send an update soon"


def _bad(rng: random.Random, item: str) -> str:
    return f"no . {item} {rng.choice(['late', 'closed', 'never'])} . wait"


def preference_rows(n: int, seed: int = 0) -> list[tuple[str, str, str]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        item = rng.choice(ITEMS)
        rows.append((rng.choice(QUESTIONS).format(item), _good(rng, item), _bad(rng, item)))
    return rows


def feedback_rows(n: int, seed: int = 0) -> list[tuple[str, str, str]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        item = rng.choice(ITEMS)
        good = i % 2 == 0
        rows.append((rng.choice(QUESTIONS).format(item), _good(rng, item) if good else _bad(rng, item), "good" if good else "bad"))
    return rows
