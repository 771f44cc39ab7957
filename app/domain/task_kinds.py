"""The task-kind registry: the one description of each kind of training task (what the columns
mean, how the form asks for them, how a record becomes a training row, the messages for a wrong
mapping), read by the services, the pages, the API and the worker alike. No torch here.

Adding a task kind: one `TaskKind(...)` entry in TASK_KINDS below, plus its training function
(tokenizer) in worker/training/data.py's TOKENIZERS and its preview function in
app/services/prompt_preview.py's PREVIEWS, under the same key (a test checks all three agree).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from app.domain.preference_losses import resolve_loss

# How a prompt is shown to a model whose tokenizer has no chat template (the answer follows). Used
# by training, the web's preview, evaluation and the model card alike.
PLAIN_PROMPT_FORMAT = "### Question:\n{prompt}\n\n### Answer:\n"
# The same, for rows that carry a system message or context.
PLAIN_PROMPT_WITH_CONTEXT_FORMAT = "### Context:\n{system}\n\n### Question:\n{prompt}\n\n### Answer:\n"


def render_plain_prompt(prompt: str, system: str | None = None) -> str:
    """A prompt in the plain format (for tokenizers without a chat template)."""
    if system:
        return PLAIN_PROMPT_WITH_CONTEXT_FORMAT.format(system=system, prompt=prompt)
    return PLAIN_PROMPT_FORMAT.format(prompt=prompt)


@dataclass(frozen=True)
class ColumnRole:
    """One thing a task needs from the dataset's columns (a key of the job's column mapping)."""

    key: str  # key in the column mapping, e.g. "prompt"
    label: str  # the form's label, e.g. "Prompt column"
    hint: str  # the short explanation beside the label
    noun: str  # what the column holds, for messages: "Choose the column that holds the {noun}."
    form_field: str  # the form's field name, e.g. "prompt_column"
    required: bool = True
    many: bool = False  # several columns (a list in the mapping)
    is_label: bool = False  # the class to predict: a class id, never read as text
    name_words: tuple[str, ...] = ()  # words in a column name that suggest this role

    def missing_message(self) -> str:
        if self.many:
            return f"Choose at least one column that holds the {self.noun}."
        return f"Choose the column that holds the {self.noun}."


def _cell(record: Mapping[str, Any], column: Any) -> str:
    return str(record.get(column) or "").strip() if column else ""


def _instruction_row(record: Mapping[str, Any], mapping: Mapping[str, Any]) -> tuple | None:
    prompt, response = _cell(record, mapping.get("prompt")), _cell(record, mapping.get("response"))
    if not (prompt and response):
        return None
    extra = "\n\n".join(v for v in (_cell(record, mapping.get("system")), _cell(record, mapping.get("context"))) if v)
    return (prompt, response, extra) if extra else (prompt, response)


def _text_row(record: Mapping[str, Any], mapping: Mapping[str, Any]) -> tuple | None:
    text = "\n\n".join(v for v in (_cell(record, c) for c in mapping.get("text_columns") or []) if v)
    return (text,) if text else None


def _classification_row(record: Mapping[str, Any], mapping: Mapping[str, Any]) -> tuple | None:
    text, label = _cell(record, mapping.get("text")), _cell(record, mapping.get("label"))
    return (text, label) if text and label else None


@dataclass(frozen=True)
class TaskKind:
    """A kind of training task: its column roles, its rows and its rules."""

    key: str
    label: str  # shown in the task chooser
    legend: str  # heading of the column-mapping fieldset
    roles: tuple[ColumnRole, ...]
    # One record (column -> cell) and the mapping -> the training row, or None when a needed cell is empty.
    make_row: Callable[[Mapping[str, Any], Mapping[str, Any]], tuple | None]
    row_shape: str  # the training rows' shape, for documentation
    has_labels: bool = False  # rows end in a label: class ids, stratified splits, label checks
    # The model writes text (a decoder's language-model head); False: a classification head, which
    # an encoder model can carry too.
    generative: bool = True
    # Rows are a prompt (rendered with the chat template or the plain prompt format) and an answer;
    # a system or context cell becomes the system turn.
    prompted: bool = False
    # Long rows are cut into several pieces of the maximum length (instead of keeping the start).
    chunked: bool = False
    # Pairs of roles that must name different columns, with the message when they do not.
    distinct: tuple[tuple[str, str, str], ...] = ()
    # Why a record yields no row, in a few words (counted and shown with the mapping checks);
    # None: only "a needed cell is empty".
    skip_reason: Callable[[Mapping[str, Any], Mapping[str, Any]], str | None] | None = None
    # Why the usable rows as a whole cannot train this kind (e.g. feedback that is all "good").
    rows_problem: Callable[[Sequence[tuple]], str | None] | None = None
    # The techniques that can train it (None: every technique that lists it).
    techniques: tuple[str, ...] | None = None
    # The held-out rows whose answer is a good reference for evaluation (feedback: those marked good); None: all.
    reference_rows: Callable[[Sequence[tuple]], list[tuple]] | None = None
    # Why the job's parameters cannot train this kind (e.g. a pairs loss on feedback rows), or None.
    params_problem: Callable[[Mapping[str, Any]], str | None] | None = None
    # Whether one job may spread over several devices (DDP/FSDP); False: its recipe has no sharded step yet.
    multi_device: bool = True

    def allows_technique(self, technique: str) -> bool:
        return self.techniques is None or technique in self.techniques

    @property
    def required_roles(self) -> tuple[ColumnRole, ...]:
        return tuple(r for r in self.roles if r.required)

    @property
    def optional_roles(self) -> tuple[ColumnRole, ...]:
        return tuple(r for r in self.roles if not r.required)

    def role(self, key: str) -> ColumnRole:
        return next(r for r in self.roles if r.key == key)

    @property
    def label_role(self) -> ColumnRole | None:
        """The role holding the class to predict (None for tasks without labels)."""
        return next((r for r in self.roles if r.is_label), None)

    def text_columns(self, mapping: Mapping[str, Any]) -> list[str]:
        """The mapped columns whose cells the model reads as text (not the label)."""
        return [column for key, column in self.mapped_columns(mapping) if not self.role(key).is_label]

    @property
    def needed_nouns(self) -> str:
        """'prompt and response', for messages about rows lacking what the task needs."""
        return " and ".join(r.noun for r in self.required_roles)

    def clean_mapping(self, mapping: Mapping[str, Any]) -> dict[str, Any]:
        """Only this task's roles; several-column roles as a list, empty optional roles dropped."""
        clean: dict[str, Any] = {}
        for role in self.roles:
            value = mapping.get(role.key)
            if role.many:
                if isinstance(value, str):
                    value = [c.strip() for c in value.split(",") if c.strip()]
                clean[role.key] = [str(c) for c in (value or [])]
            elif value:
                clean[role.key] = str(value)
        return clean

    def mapping_from_form(self, form: Any) -> dict[str, Any]:
        """The column mapping from a submitted form (anything with get(), and getlist() for several columns)."""
        mapping: dict[str, Any] = {}
        for role in self.roles:
            if role.many:
                mapping[role.key] = [str(c) for c in form.getlist(role.form_field) if c]
            elif role.required or form.get(role.form_field):
                mapping[role.key] = str(form.get(role.form_field) or "")
        return mapping

    def mapped_columns(self, mapping: Mapping[str, Any]) -> list[tuple[str, str]]:
        """(role, column) for every column the mapping uses, in the order of the roles."""
        pairs = []
        for role in self.roles:
            value = mapping.get(role.key)
            for column in value if isinstance(value, list) else [value] if value else []:
                pairs.append((role.key, str(column)))
        return pairs

    def mapping_errors(self, columns: list[str], mapping: Mapping[str, Any]) -> dict[str, str]:
        """Roles left unmapped, columns the dataset lacks, and roles that must differ (role -> message)."""
        errors: dict[str, str] = {}
        for role in self.roles:
            value = mapping.get(role.key)
            chosen = value if isinstance(value, list) else [value] if value else []
            if not chosen:
                if role.required:
                    errors[role.key] = role.missing_message()
                continue
            for column in chosen:
                if column not in columns:
                    errors[role.key] = f"The dataset has no column named {column!r}. Its columns are: {', '.join(columns)}."
        if not errors:
            for first, second, message in self.distinct:
                if mapping.get(first) and mapping.get(first) == mapping.get(second):
                    errors[second] = message
        return errors

    def identity(self, row: Sequence[Any]) -> str:
        """What identifies a row in leakage and split checks: the prompt or the text."""
        return row[0]

    def label_of(self, row: tuple) -> str | None:
        return row[-1] if self.has_labels else None


INSTRUCTION = TaskKind(
    key="instruction",
    label="Instruction (prompt → response)",
    legend="Map your columns: prompt → response",
    roles=(
        ColumnRole(
            "prompt",
            "Prompt column",
            "what the user asks",
            "prompt",
            "prompt_column",
            name_words=("prompt", "question", "instruction", "input", "query", "customer", "message"),
        ),
        ColumnRole(
            "response",
            "Response column",
            "the answer the model should learn to give",
            "response",
            "response_column",
            name_words=("response", "answer", "output", "completion", "reply", "agent", "target"),
        ),
        ColumnRole(
            "system",
            "System message column",
            "(optional) instructions or persona per row",
            "system message",
            "system_column",
            required=False,
            name_words=("system", "persona", "instructions"),
        ),
        ColumnRole(
            "context",
            "Context column",
            "(optional) background the answer may use",
            "context",
            "context_column",
            required=False,
            name_words=("context", "background", "knowledge", "history", "source"),
        ),
    ),
    make_row=_instruction_row,
    row_shape="(prompt, response) or (prompt, response, system-and-context)",
    prompted=True,
    distinct=(("prompt", "response", "The prompt and the response must be different columns."),),
)

TEXT = TaskKind(
    key="text",
    label="Continued training on text",
    legend="Text columns to continue training on",
    roles=(
        ColumnRole(
            "text_columns",
            "Text columns",
            "long texts are cut into pieces of the maximum length",
            "text",
            "text_columns",
            many=True,
            name_words=("text", "body", "content", "description", "copy", "article", "document", "message", "review", "comment", "post"),
        ),
    ),
    make_row=_text_row,
    row_shape="(text,) with the chosen columns joined by blank lines",
    chunked=True,
)

CLASSIFICATION = TaskKind(
    key="classification",
    label="Classification (text → label)",
    legend="Map your columns: text → label",
    roles=(
        ColumnRole(
            "text",
            "Text column",
            "what to classify",
            "text",
            "class_text_column",
            name_words=(
                "text",
                "body",
                "content",
                "description",
                "copy",
                "article",
                "document",
                "message",
                "review",
                "comment",
                "post",
                "question",
                "prompt",
                "input",
                "ticket",
                "subject",
            ),
        ),
        ColumnRole(
            "label",
            "Label column",
            "the category to predict",
            "label",
            "label_column",
            is_label=True,
            name_words=("label", "category", "class", "intent", "sentiment", "tag", "topic", "type", "priority", "team", "queue"),
        ),
    ),
    make_row=_classification_row,
    row_shape="(text, label)",
    has_labels=True,
    generative=False,
    distinct=(("text", "label", "The text and the label must be different columns."),),
)

# --- preference tuning: pairs of answers, or answers marked good or bad ------------------------

PREFERENCE_TECHNIQUES = ("lora", "qlora", "dora", "rslora")  # the LoRA family: the reference is the adapter switched off
GOOD_WORDS = frozenset({"good", "yes", "y", "1", "true", "up", "thumbs up", "👍", "positive", "accept", "accepted", "desirable", "+1", "+"})
BAD_WORDS = frozenset(
    {"bad", "no", "n", "0", "false", "down", "thumbs down", "👎", "negative", "reject", "rejected", "undesirable", "-1", "-"}
)


def feedback_value(cell: Any) -> str | None:
    """'good', 'bad' or None for a feedback label cell (good/bad, yes/no, 1/0, thumbs up/down...)."""
    word = str(cell if cell is not None else "").strip().lower()
    if word.endswith(".0"):  # a spreadsheet's 1.0 / 0.0
        word = word[:-2]
    return "good" if word in GOOD_WORDS else "bad" if word in BAD_WORDS else None


def _extra(record: Mapping[str, Any], mapping: Mapping[str, Any]) -> str:
    return "\n\n".join(v for v in (_cell(record, mapping.get("system")), _cell(record, mapping.get("context"))) if v)


def _preference_skip(record: Mapping[str, Any], mapping: Mapping[str, Any]) -> str | None:
    prompt, chosen, rejected = (_cell(record, mapping.get(k)) for k in ("prompt", "chosen", "rejected"))
    if not prompt:
        return "no prompt"
    if not chosen and not rejected:
        return "both answers empty"
    if not chosen or not rejected:
        return "one-sided (only one answer)"
    if chosen == rejected:
        return "chosen and rejected identical"
    return None


def _preference_row(record: Mapping[str, Any], mapping: Mapping[str, Any]) -> tuple | None:
    if _preference_skip(record, mapping) is not None:
        return None
    row = tuple(_cell(record, mapping.get(k)) for k in ("prompt", "chosen", "rejected"))
    extra = _extra(record, mapping)
    return (*row, extra) if extra else row


def _feedback_skip(record: Mapping[str, Any], mapping: Mapping[str, Any]) -> str | None:
    if not _cell(record, mapping.get("prompt")):
        return "no prompt"
    if not _cell(record, mapping.get("answer")):
        return "empty answer"
    if feedback_value(record.get(mapping.get("feedback") or "")) is None:
        return "feedback neither good nor bad"
    return None


def _feedback_row(record: Mapping[str, Any], mapping: Mapping[str, Any]) -> tuple | None:
    if _feedback_skip(record, mapping) is not None:
        return None
    row = (
        _cell(record, mapping.get("prompt")),
        _cell(record, mapping.get("answer")),
        feedback_value(record.get(mapping.get("feedback") or "")),
    )
    extra = _extra(record, mapping)
    return (*row, extra) if extra else row


def _feedback_rows_problem(rows: Sequence[tuple]) -> str | None:
    values = {row[2] for row in rows}
    if values == {"good"}:
        return (
            'Every usable row is marked "good". KTO learns by contrasting good answers with bad ones, so it needs some '
            'rows marked "bad" too; add them, or train the good answers as an instruction task.'
        )
    if values == {"bad"}:
        return 'Every usable row is marked "bad". KTO needs some rows marked "good" too, to learn what to do instead.'
    return None


def _loss_problem(task: str) -> Callable[[Mapping[str, Any]], str | None]:
    def problem(params: Mapping[str, Any]) -> str | None:
        try:
            resolve_loss(task, params.get("preference_loss"))
        except ValueError as exc:
            return str(exc)
        return None

    return problem


def _shared_roles(prefix: str, *keys: str) -> tuple[ColumnRole, ...]:
    """Instruction's roles, under form fields of this kind's own (one form holds every kind's fieldset)."""
    return tuple(replace(r, form_field=f"{prefix}_{r.form_field}") for r in INSTRUCTION.roles if r.key in keys)


PREFERENCE = TaskKind(
    key="preference",
    label="Preference pairs (prompt → chosen vs rejected)",
    legend="Map your columns: prompt → the better (chosen) and the worse (rejected) answer",
    roles=(
        *_shared_roles("preference", "prompt"),
        ColumnRole(
            "chosen",
            "Chosen answer column",
            "the answer people preferred",
            "chosen answer",
            "chosen_column",
            name_words=("chosen", "preferred", "better", "winner", "good", "accepted", "correction"),
        ),
        ColumnRole(
            "rejected",
            "Rejected answer column",
            "the answer people liked less",
            "rejected answer",
            "rejected_column",
            name_words=("rejected", "worse", "loser", "bad", "dispreferred"),
        ),
        *_shared_roles("preference", "system", "context"),
    ),
    make_row=_preference_row,
    row_shape="(prompt, chosen, rejected) or (prompt, chosen, rejected, system-and-context)",
    prompted=True,
    distinct=(
        ("prompt", "chosen", "The prompt and the chosen answer must be different columns."),
        ("chosen", "rejected", "The chosen and the rejected answer must be different columns."),
    ),
    skip_reason=_preference_skip,
    techniques=PREFERENCE_TECHNIQUES,
    params_problem=_loss_problem("preference"),
    multi_device=False,  # PreferenceRecipe's step is not sharded (worker/training/distributed.py): one device
)

FEEDBACK = TaskKind(
    key="feedback",
    label="Feedback (prompt → answer marked good or bad)",
    legend="Map your columns: prompt → answer, and whether it was good or bad",
    roles=(
        *_shared_roles("feedback", "prompt"),
        ColumnRole(
            "answer",
            "Answer column",
            "the answer that was rated",
            "answer",
            "answer_column",
            name_words=("answer", "response", "completion", "output", "reply"),
        ),
        ColumnRole(
            "feedback",
            "Good/bad column",
            "good or bad (also yes/no, 1/0, thumbs up/down)",
            "good/bad rating",
            "feedback_column",
            name_words=("feedback", "rating", "label", "thumb", "good", "vote", "desirable", "score"),
        ),
        *_shared_roles("feedback", "system", "context"),
    ),
    make_row=_feedback_row,
    row_shape="(prompt, answer, 'good' or 'bad') or (prompt, answer, 'good' or 'bad', system-and-context)",
    prompted=True,
    distinct=(
        ("prompt", "answer", "The prompt and the answer must be different columns."),
        ("answer", "feedback", "The answer and the good/bad rating must be different columns."),
    ),
    skip_reason=_feedback_skip,
    rows_problem=_feedback_rows_problem,
    reference_rows=lambda rows: [row for row in rows if row[2] == "good"],
    techniques=PREFERENCE_TECHNIQUES,
    params_problem=_loss_problem("feedback"),
    multi_device=False,  # PreferenceRecipe's step is not sharded (worker/training/distributed.py): one device
)

TASK_KINDS: dict[str, TaskKind] = {kind.key: kind for kind in (INSTRUCTION, TEXT, CLASSIFICATION, PREFERENCE, FEEDBACK)}
TASK_KEYS: tuple[str, ...] = tuple(TASK_KINDS)
# A query-parameter pattern that accepts exactly the registered keys (the API's validation).
TASK_KEY_PATTERN = "^(" + "|".join(TASK_KEYS) + ")$"
DEFAULT_TASK = "instruction"


class UnknownTaskKind(ValueError):
    def __init__(self, key: Any):
        super().__init__(f"Unknown task {key!r}. Choose one of: {', '.join(TASK_KEYS)}.")


def get_task_kind(key: Any) -> TaskKind:
    """The registered task kind, or UnknownTaskKind with a plain message."""
    kind = TASK_KINDS.get(key) if isinstance(key, str) else None
    if kind is None:
        raise UnknownTaskKind(key)
    return kind


def task_labels() -> dict[str, str]:
    """key -> label, for choosers."""
    return {key: kind.label for key, kind in TASK_KINDS.items()}
