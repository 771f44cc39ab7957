"""Guessing which dataset column fills each role of a task, from the column names (each role's
name_words in the task-kind registry) and, given sample rows, from their content."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from app.domain.task_kinds import TaskKind, get_task_kind

Stats = dict[str, dict[str, float]]


def _column_stats(columns: list[str], sample_rows: list[dict[str, str]]) -> Stats:
    stats = {}
    for column in columns:
        values = [(row.get(column) or "").strip() for row in sample_rows]
        filled = [v for v in values if v]
        stats[column] = {
            "mean_chars": sum(map(len, filled)) / len(filled) if filled else 0.0,
            "distinct": len(set(filled)),
            "filled": len(filled),
            "questions": sum(v.endswith("?") or "?" in v[-40:] for v in filled) / len(filled) if filled else 0.0,
            "numeric": sum(v.replace(".", "", 1).lstrip("+-").isdigit() for v in filled) / len(filled) if filled else 0.0,
        }
    return stats


def _named(columns: list[str], words: tuple[str, ...], exclude: set[Any]) -> str | None:
    """The first column (word by word, in the order of the words) whose name contains a word."""
    for word in words:
        for column in columns:
            if column not in exclude and word in column.lower():
                return column
    return None


def _guess_instruction(
    kind: TaskKind, columns: list[str], sample_rows: list[dict[str, str]], stats: Stats, by_length: list[str]
) -> dict[str, Any]:
    prompt_words = kind.role("prompt").name_words
    named_prompt = _named(columns, prompt_words, set())
    prompt = named_prompt or (columns[0] if columns else None)
    response = _named(columns, kind.role("response").name_words, {prompt}) or next((c for c in columns if c != prompt), None)
    if sample_rows and named_prompt is None and len(by_length) >= 2:
        # No telling names: the prompt asks (question marks), the response is the longer text.
        prompt = max(by_length, key=lambda c: (stats[c]["questions"], -stats[c]["mean_chars"]))
        response = next((c for c in by_length if c != prompt), response)
    used = {prompt, response}
    return {
        "prompt": prompt,
        "response": response,
        "system": _named(columns, kind.role("system").name_words, used),
        "context": _named(columns, kind.role("context").name_words, used),
    }


def _guess_text(
    kind: TaskKind, columns: list[str], sample_rows: list[dict[str, str]], stats: Stats, by_length: list[str]
) -> dict[str, Any]:
    words = kind.role("text_columns").name_words
    named = [c for c in columns if any(w in c.lower() for w in words)]
    if sample_rows:
        long_texts = [c for c in by_length if stats[c]["mean_chars"] >= 40]
        chosen = [c for c in columns if c in named or c in long_texts] or by_length[:1]
    else:
        chosen = named or columns[:1]
    return {"text_columns": chosen}


def _guess_classification(
    kind: TaskKind, columns: list[str], sample_rows: list[dict[str, str]], stats: Stats, by_length: list[str]
) -> dict[str, Any]:
    label = _named(columns, kind.role("label").name_words, set())
    if sample_rows:
        candidates = [
            c
            for c in columns
            if stats[c]["filled"]
            and 2 <= stats[c]["distinct"] <= max(2, min(100, stats[c]["filled"] // 2))
            and stats[c]["mean_chars"] <= 40
        ]
        if label is None or label not in candidates:
            label = min(candidates, key=lambda c: (stats[c]["distinct"], stats[c]["mean_chars"])) if candidates else label
    text = _named(columns, kind.role("text").name_words, {label} if label else set())
    if sample_rows and by_length:
        longest = next((c for c in by_length if c != label), None)
        if text is None or (longest and stats[text]["mean_chars"] * 3 < stats[longest]["mean_chars"]):
            text = longest
    if text is None:
        text = next((c for c in columns if c != label), None)
    return {"text": text, "label": label}


def _guess_by_names(
    kind: TaskKind, columns: list[str], sample_rows: list[dict[str, str]], stats: Stats, by_length: list[str]
) -> dict[str, Any]:
    """Any task kind without a guesser of its own: each role the first column its name words find."""
    used: set[Any] = set()
    guess: dict[str, Any] = {}
    for role in kind.roles:
        column = _named(columns, role.name_words, used)
        guess[role.key] = [column] if role.many and column else [] if role.many else column
        used.add(column)
    return guess


# The content rules of the registered task kinds (the names come from the registry).
_GUESSERS: dict[str, Callable[..., dict[str, Any]]] = {
    "instruction": _guess_instruction,
    "text": _guess_text,
    "classification": _guess_classification,
}


def guess_columns(task: str, columns: list[str], sample_rows: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """Guess the column of each role of a task (its mapping keys) from names and content; roles that
    fit no column are None (or an empty list). An unknown task raises UnknownTaskKind.

    instruction -> {"prompt", "response", "system", "context"}; text -> {"text_columns": [...]};
    classification -> {"text", "label"}.
    """
    kind = get_task_kind(task)
    sample_rows = sample_rows or []
    stats = _column_stats(columns, sample_rows)
    texty = [c for c in columns if stats[c]["filled"] and stats[c]["numeric"] < 0.5] if sample_rows else list(columns)
    by_length = sorted(texty, key=lambda c: -stats[c]["mean_chars"])
    return _GUESSERS.get(kind.key, _guess_by_names)(kind, columns, sample_rows, stats, by_length)
