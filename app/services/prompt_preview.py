"""Rows exactly as the model will see them, for the training form, without torch or transformers.

The base model's folder holds tokenizer.json (read with `tokenizers`) and tokenizer_config.json
or chat_template.jinja (rendered with jinja2 the way transformers' `apply_chat_template` does: a
sandboxed environment with trim_blocks, lstrip_blocks, `raise_exception` and the special tokens
as variables). The rules for joining prompt, response and EOS, truncating and dropping are those
of worker/training/data.py; tests/app/test_prompt_preview.py checks that ids and loss masks
equal the engine's for the same rows.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from app.domain.task_kinds import get_task_kind, render_plain_prompt

# The engine's rule (worker/training/data.py); the equality test keeps them in step.
MIN_RESPONSE_TOKENS = 8
SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
PREVIEW_ROWS = 3


class PreviewError(ValueError):
    """The preview cannot be made; the message says why, for people."""


@dataclass(frozen=True)
class PreviewToken:
    """One token as shown: its text, whether it carries the loss, and whether it is a control token."""

    text: str
    loss: bool
    special: bool = False
    cut: bool = False  # beyond the maximum length: not seen by the model


@dataclass
class PreviewPart:
    """One training example (a text task yields one per chunk): tokens shown and the engine's view."""

    tokens: list[PreviewToken]
    input_ids: list[int]
    loss_mask: list[bool]

    @property
    def n_tokens(self) -> int:
        return len(self.input_ids)

    @property
    def loss_tokens(self) -> int:
        return sum(self.loss_mask)


@dataclass
class PreviewExample:
    task: str
    parts: list[PreviewPart]
    truncated: bool = False
    dropped: bool = False
    note: str | None = None
    label: str | None = None
    class_id: int | None = None
    titles: list[str] = field(default_factory=list)  # one per part, shown side by side (chosen | rejected)

    @property
    def n_tokens(self) -> int:
        return sum(p.n_tokens for p in self.parts)

    def as_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "truncated": self.truncated,
            "dropped": self.dropped,
            "note": self.note,
            "label": self.label,
            "class_id": self.class_id,
            "titles": self.titles,
            "tokens": self.n_tokens,
            "parts": [
                {
                    "tokens": [{"text": t.text, "loss": t.loss, "special": t.special, "cut": t.cut} for t in p.tokens],
                    "input_ids": p.input_ids,
                    "loss_mask": p.loss_mask,
                }
                for p in self.parts
            ],
        }


# ---------------------------------------------------------------- the tokenizer and chat template of a model folder


@dataclass
class PreviewTokenizer:
    tokenizer: Any  # tokenizers.Tokenizer
    chat_template: str | None
    special_tokens: dict[str, str]
    special_ids: set[int] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)  # truncation is tokenizer state

    def token_id(self, name: str) -> int | None:
        token = self.special_tokens.get(name)
        return self.tokenizer.token_to_id(token) if token else None

    @property
    def eos_token_id(self) -> int | None:
        return self.token_id("eos_token")

    @property
    def bos_token_id(self) -> int | None:
        return self.token_id("bos_token")

    def encode(self, text: str, add_special_tokens: bool, max_length: int | None = None):
        # One tokenizer serves every request thread, and truncation is a setting on it: encode under the lock.
        with self.lock:
            if max_length is None:
                return self.tokenizer.encode(text, add_special_tokens=add_special_tokens)
            self.tokenizer.enable_truncation(max_length)
            try:
                return self.tokenizer.encode(text, add_special_tokens=add_special_tokens)
            finally:
                self.tokenizer.no_truncation()


def _token_content(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) and value else None


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _chat_template(folder: Path, config: dict) -> str | None:
    """chat_template.jinja (what transformers 5 saves) or tokenizer_config.json's chat_template."""
    jinja_file = folder / "chat_template.jinja"
    if jinja_file.is_file():
        return jinja_file.read_text(encoding="utf-8") or None
    template = config.get("chat_template")
    if isinstance(template, list):  # named templates: the default one is what apply_chat_template uses
        template = next((t.get("template") for t in template if isinstance(t, dict) and t.get("name") == "default"), None)
    return template if isinstance(template, str) and template else None


def model_folder(location: str) -> Path:
    folder = Path(location)
    return folder if folder.is_dir() else folder.parent


def load_preview_tokenizer(location: str) -> PreviewTokenizer:
    """The tokenizer and chat template of a base model folder (cached while the files are unchanged)."""
    folder = model_folder(location)
    tokenizer_file = folder / "tokenizer.json"
    if not tokenizer_file.is_file():
        raise PreviewError("This base model has no tokenizer.json in its folder, so its rows cannot be previewed here.")
    stamps = tuple(
        (p.name, p.stat().st_mtime_ns)
        for p in sorted(folder.glob("*"))
        if p.name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")
    )
    return _load_cached(str(folder), stamps)


@lru_cache(maxsize=8)
def _load_cached(folder_name: str, _stamps: tuple) -> PreviewTokenizer:
    from tokenizers import Tokenizer

    folder = Path(folder_name)
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    # transformers turns off any padding or truncation stored in tokenizer.json unless asked for it.
    tokenizer.no_padding()
    tokenizer.no_truncation()
    config = _read_json(folder / "tokenizer_config.json")
    names = {**config, **_read_json(folder / "special_tokens_map.json")}
    special_tokens = {name: token for name in SPECIAL_TOKEN_NAMES if (token := _token_content(names.get(name)))}
    special_ids = {token_id for token_id, added in tokenizer.get_added_tokens_decoder().items() if added.special}
    return PreviewTokenizer(tokenizer, _chat_template(folder, config), special_tokens, special_ids)


@lru_cache(maxsize=16)
def _compiled_template(source: str):
    """The template compiled as transformers compiles chat templates (sandboxed, trim/lstrip blocks)."""
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class GenerationBlock(jinja2.ext.Extension):
        # `{% generation %}...{% endgeneration %}` marks assistant text for masks; it renders its body unchanged.
        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_render", []), [], [], body).set_lineno(lineno)

        def _render(self, caller):
            return caller()

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[GenerationBlock, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(source)


def render_prompt(tok: PreviewTokenizer, prompt: str, system: str | None = None) -> str:
    """The prompt text before tokenization: the chat template (user turn, generation prompt) or the plain format."""
    if tok.chat_template:
        import jinja2

        messages = [{"role": "user", "content": prompt}]
        if system:
            messages.insert(0, {"role": "system", "content": system})
        try:
            return _compiled_template(tok.chat_template).render(
                messages=messages, tools=None, documents=None, add_generation_prompt=True, **tok.special_tokens
            )
        except jinja2.TemplateError as exc:
            raise PreviewError(f"The base model's chat template refused this row: {exc}") from None
    return render_plain_prompt(prompt, system)


# ---------------------------------------------------------------- tokens as text


def _pieces(tok: PreviewTokenizer, encoding, text: str) -> list[tuple[str, bool]]:
    """(text, is control token) per token, from the encoding's character offsets: the pieces
    join back into the text; a token added by the tokenizer (no characters) shows as itself."""
    pieces = []
    cursor = 0
    for token_id, (start, end) in zip(encoding.ids, encoding.offsets):
        special = token_id in tok.special_ids
        if end <= start and special:
            pieces.append((tok.tokenizer.id_to_token(token_id) or "", True))
            continue
        piece = text[cursor:end] if end > cursor else ""
        cursor = max(cursor, end)
        pieces.append((piece, special))
    if pieces and cursor < len(text):  # trailing characters no token covers (e.g. spaces a normaliser dropped)
        last_text, last_special = pieces[-1]
        pieces[-1] = (last_text + text[cursor:], last_special)
    return pieces


def _special(tok: PreviewTokenizer, token_id: int, loss: bool, cut: bool = False) -> PreviewToken:
    return PreviewToken(tok.tokenizer.id_to_token(token_id) or "", loss, True, cut)


# ---------------------------------------------------------------- examples per task


def preview_instruction(tok: PreviewTokenizer, row: Sequence[str], max_length: int) -> PreviewExample:
    """(prompt, response[, system and context]) as the engine's tokenize_rows builds it."""
    prompt_text = render_prompt(tok, row[0], row[2] if len(row) > 2 else None)
    prompt = tok.encode(prompt_text, add_special_tokens=not tok.chat_template)
    response = tok.encode(row[1], add_special_tokens=False)
    eos_id = tok.eos_token_id
    if eos_id is None:
        raise PreviewError("The base model's tokenizer has no end-of-sequence token, so answer ends cannot be marked.")
    prompt_tokens = [PreviewToken(text, False, special) for text, special in _pieces(tok, prompt, prompt_text)]
    response_pieces = [PreviewToken(text, True, special) for text, special in _pieces(tok, response, row[1])]
    full_response = list(response.ids) + [eos_id]
    room = max_length - len(prompt.ids)
    if room < min(MIN_RESPONSE_TOKENS, len(full_response)):
        cut = [PreviewToken(t.text, False, t.special, True) for t in response_pieces]
        return PreviewExample(
            "instruction",
            [PreviewPart(prompt_tokens + cut, [], [])],
            truncated=True,
            dropped=True,
            note=(
                f"Left out of training: the prompt takes {len(prompt.ids):,} of the {max_length:,} tokens, leaving room for fewer than "
                f"{min(MIN_RESPONSE_TOKENS, len(full_response))} answer tokens. Raise the maximum length or shorten the prompt."
            ),
        )
    truncated = len(full_response) > room
    if truncated:
        kept = list(response.ids[:room])
        shown = response_pieces[:room] + [PreviewToken(t.text, False, t.special, True) for t in response_pieces[room:]]
        note = (
            f"The answer is cut at the maximum length ({max_length:,} tokens): {len(full_response) - 1 - room:,} answer tokens "
            "are not seen, and no end-of-answer token is learned for this row."
        )
    else:
        kept = full_response
        shown = response_pieces + [_special(tok, eos_id, True)]
        note = None
    input_ids = list(prompt.ids) + kept
    return PreviewExample(
        "instruction",
        [PreviewPart(prompt_tokens + shown, input_ids, [False] * len(prompt.ids) + [True] * len(kept))],
        truncated=truncated,
        note=note,
    )


def preview_text(tok: PreviewTokenizer, text: str, max_length: int) -> PreviewExample:
    """A text cut into max_length chunks (BOS + text + EOS), loss on every token, as tokenize_texts does."""
    encoding = tok.encode(text, add_special_tokens=False)
    eos_id, bos_id = tok.eos_token_id, tok.bos_token_id
    tokens = [PreviewToken(piece, True, special) for piece, special in _pieces(tok, encoding, text)]
    ids = list(encoding.ids)
    if bos_id is not None and bos_id != eos_id:
        ids, tokens = [bos_id] + ids, [_special(tok, bos_id, True)] + tokens
    if eos_id is not None:
        ids, tokens = ids + [eos_id], tokens + [_special(tok, eos_id, True)]
    parts = []
    for start in range(0, len(ids), max_length):
        chunk = ids[start : start + max_length]
        if len(chunk) >= 2:
            parts.append(PreviewPart(tokens[start : start + max_length], chunk, [True] * len(chunk)))
    truncated = len(parts) > 1
    note = None
    if not parts:
        note = "Left out of training: too short to predict anything."
    elif truncated:
        note = f"Longer than the maximum length ({max_length:,} tokens): cut into {len(parts)} pieces, each trained on its own."
    return PreviewExample("text", parts, truncated=truncated, dropped=not parts, note=note)


def preview_classification(tok: PreviewTokenizer, row: Sequence[str], max_length: int, label_names: Sequence[str]) -> PreviewExample:
    """(text, label): the text's tokens (start kept when long) and the label's class id, as tokenize_classification does."""
    text, label = row[0], str(row[1])
    full = tok.encode(text, add_special_tokens=True)
    kept = tok.encode(text, add_special_tokens=True, max_length=max_length)
    tokens = [PreviewToken(piece, False, special) for piece, special in _pieces(tok, kept, text)]
    truncated = len(kept.ids) < len(full.ids)
    if truncated:
        covered = max((end for _, end in kept.offsets), default=0)
        tokens.append(PreviewToken(text[covered:], False, False, True))
    class_id = {name: i for i, name in enumerate(label_names)}.get(label)
    note = (
        (f"Longer than the maximum length ({max_length:,} tokens): only the first {len(kept.ids):,} of {len(full.ids):,} tokens are read.")
        if truncated
        else None
    )
    return PreviewExample(
        "classification",
        [PreviewPart(tokens, list(kept.ids), [False] * len(kept.ids))],
        truncated=truncated,
        dropped=class_id is None or not kept.ids,
        note=note,
        label=label,
        class_id=class_id,
    )


def _preview_classification_rows(
    tok: PreviewTokenizer, rows: Sequence, max_length: int, label_names: Sequence[str] | None
) -> list[PreviewExample]:
    names = list(label_names) if label_names is not None else sorted({str(r[1]) for r in rows})
    return [preview_classification(tok, row, max_length, names) for row in rows]


# The preview function of each task kind (app/domain/task_kinds.py), by its key, mirroring the
# worker's TOKENIZERS: (tokenizer, rows, max_length, label names or None) -> examples.
def preview_answers(
    tok: PreviewTokenizer, task: str, row: Sequence[str], max_length: int, answers: Sequence[tuple[int, str]]
) -> PreviewExample:
    """A prompt with each of its answers (preference: chosen and rejected; feedback: the rated answer),
    each joined the instruction way, as worker/training/preference.py tokenizes them; a pair whose
    answer cannot fit is left out whole."""
    extra = row[3] if len(row) > 3 else None
    shown = [preview_instruction(tok, (row[0], row[i], extra) if extra else (row[0], row[i]), max_length) for i, _ in answers]
    notes = [f"{title}: {example.note}" for (_, title), example in zip(answers, shown) if example.note]
    return PreviewExample(
        task,
        [example.parts[0] for example in shown],
        truncated=any(e.truncated for e in shown),
        dropped=any(e.dropped for e in shown),
        note=" ".join(notes) or None,
        titles=[title for _, title in answers],
    )


PREVIEWS: dict[str, Callable[..., list[PreviewExample]]] = {
    "preference": lambda tok, rows, max_length, label_names: [
        preview_answers(tok, "preference", row, max_length, ((1, "Chosen"), (2, "Rejected"))) for row in rows
    ],
    "feedback": lambda tok, rows, max_length, label_names: [
        preview_answers(tok, "feedback", row, max_length, ((1, f"Answer marked {row[2]}"),)) for row in rows
    ],
    "instruction": lambda tok, rows, max_length, label_names: [preview_instruction(tok, row, max_length) for row in rows],
    "text": lambda tok, rows, max_length, label_names: [
        preview_text(tok, row[0] if isinstance(row, (tuple, list)) else row, max_length) for row in rows
    ],
    "classification": _preview_classification_rows,
}


def preview_rows(
    tok: PreviewTokenizer, task: str, rows: Sequence, max_length: int, label_names: Sequence[str] | None = None
) -> list[PreviewExample]:
    """Task rows (the shapes of TaskKind.row_shape) as the model will see them."""
    if max_length < 2:
        raise PreviewError("The maximum length must be at least 2 tokens.")
    try:
        kind = get_task_kind(task)
    except ValueError as exc:
        raise PreviewError(str(exc)) from None
    return PREVIEWS[kind.key](tok, rows, max_length, label_names)
