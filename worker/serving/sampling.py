"""Choosing the next token per row: greedy at temperature 0, otherwise temperature and top-p with
the request's own generator (same seed, same text)."""

from __future__ import annotations

import torch

GREEDY_BELOW = 1e-5  # a temperature this small is greedy (OpenAI's 0)


def make_generator(seed: int | None, device: torch.device) -> torch.Generator:
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(int(seed) & 0xFFFF_FFFF_FFFF_FFFF)
    return generator


def is_greedy(temperature: float) -> bool:
    return temperature < GREEDY_BELOW


def sample(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator) -> int:
    """One token from one row of logits (float32 for a stable softmax)."""
    if is_greedy(temperature):
        return int(torch.argmax(logits))
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        cumulative = torch.cumsum(sorted_probs, dim=-1)
        # keep the smallest set whose mass reaches top_p (the token crossing the line included)
        drop = cumulative - sorted_probs >= top_p
        sorted_probs = sorted_probs.masked_fill(drop, 0.0)
        choice = torch.multinomial(sorted_probs, 1, generator=generator)
        return int(order[choice])
    return int(torch.multinomial(probs, 1, generator=generator))
