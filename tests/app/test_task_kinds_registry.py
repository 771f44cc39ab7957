"""The task-kind registry (app/domain/task_kinds.py): forms, mappings, messages and rows of each kind."""

from __future__ import annotations

import re

import pytest

from app.domain.task_kinds import (
    PLAIN_PROMPT_FORMAT,
    TASK_KEY_PATTERN,
    TASK_KEYS,
    TASK_KINDS,
    UnknownTaskKind,
    get_task_kind,
    render_plain_prompt,
    task_labels,
)


class Form(dict):
    """A submitted form: get() for one value, getlist() for several (as starlette's FormData)."""

    def getlist(self, key):
        value = self.get(key)
        return value if isinstance(value, list) else [] if value is None else [value]


def test_every_kind_is_keyed_by_its_key_and_labelled():
    assert TASK_KEYS == ("instruction", "text", "classification", "preference", "feedback")
    assert all(kind.key == key for key, kind in TASK_KINDS.items())
    assert task_labels() == {key: kind.label for key, kind in TASK_KINDS.items()}
    assert all(re.fullmatch(TASK_KEY_PATTERN, key) for key in TASK_KEYS)
    assert not re.fullmatch(TASK_KEY_PATTERN, "instructions") and not re.fullmatch(TASK_KEY_PATTERN, "text|x")


def test_an_unknown_task_is_refused_in_plain_words():
    with pytest.raises(
        UnknownTaskKind, match=r"Unknown task 'chat'\. Choose one of: instruction, text, classification, preference, feedback\."
    ):
        get_task_kind("chat")
    with pytest.raises(ValueError):
        get_task_kind(None)


def test_mapping_from_form_reads_each_roles_field():
    form = Form(
        prompt_column="q",
        response_column="a",
        system_column="",
        context_column="ctx",
        text_columns=["body", "", "title"],
        class_text_column="t",
        label_column="y",
    )
    assert get_task_kind("instruction").mapping_from_form(form) == {"prompt": "q", "response": "a", "context": "ctx"}
    assert get_task_kind("text").mapping_from_form(form) == {"text_columns": ["body", "title"]}
    assert get_task_kind("classification").mapping_from_form(form) == {"text": "t", "label": "y"}
    # A required role left empty stays in the mapping (empty), so mapping_errors can name it.
    assert get_task_kind("classification").mapping_from_form(Form()) == {"text": "", "label": ""}


def test_clean_mapping_keeps_only_the_kinds_roles():
    mixed = {"prompt": "q", "response": "a", "system": "", "text": "t", "label": "y", "text_columns": "body, title ,"}
    assert get_task_kind("instruction").clean_mapping(mixed) == {"prompt": "q", "response": "a"}
    assert get_task_kind("text").clean_mapping(mixed) == {"text_columns": ["body", "title"]}
    assert get_task_kind("classification").clean_mapping(mixed) == {"text": "t", "label": "y"}
    assert get_task_kind("text").clean_mapping({}) == {"text_columns": []}


def test_mapping_errors_name_the_role_and_keep_the_messages():
    columns = ["question", "answer", "topic"]
    instruction, text, classification = (get_task_kind(k) for k in TASK_KEYS[:3])
    assert instruction.mapping_errors(columns, {"prompt": "question"}) == {"response": "Choose the column that holds the response."}
    assert instruction.mapping_errors(columns, {"prompt": "question", "response": "reply"}) == {
        "response": "The dataset has no column named 'reply'. Its columns are: question, answer, topic."
    }
    assert instruction.mapping_errors(columns, {"prompt": "question", "response": "question"}) == {
        "response": "The prompt and the response must be different columns."
    }
    assert instruction.mapping_errors(columns, {"prompt": "question", "response": "answer", "context": "nope"}) == {
        "context": "The dataset has no column named 'nope'. Its columns are: question, answer, topic."
    }
    assert text.mapping_errors(columns, {"text_columns": []}) == {"text_columns": "Choose at least one column that holds the text."}
    assert classification.mapping_errors(columns, {"text": "question", "label": "question"}) == {
        "label": "The text and the label must be different columns."
    }
    assert classification.mapping_errors(columns, {"text": "question", "label": "topic"}) == {}


def test_make_row_gives_each_kinds_row_shape_or_none():
    record = {"q": " How? ", "a": "Thus.", "s": "Be brief.", "c": "", "t1": "One", "t2": " ", "t3": "Two", "y": "billing"}
    instruction, text, classification = (get_task_kind(k) for k in TASK_KEYS[:3])
    assert instruction.make_row(record, {"prompt": "q", "response": "a"}) == ("How?", "Thus.")
    assert instruction.make_row(record, {"prompt": "q", "response": "a", "system": "s", "context": "c"}) == ("How?", "Thus.", "Be brief.")
    assert instruction.make_row(record, {"prompt": "q", "response": "c"}) is None
    assert text.make_row(record, {"text_columns": ["t1", "t2", "t3"]}) == ("One\n\nTwo",)
    assert text.make_row(record, {"text_columns": ["t2"]}) is None
    assert classification.make_row(record, {"text": "q", "label": "y"}) == ("How?", "billing")
    assert classification.label_of(("How?", "billing")) == "billing" and instruction.label_of(("How?", "Thus.")) is None
    assert classification.label_role.key == "label" and instruction.label_role is None


def test_needed_nouns_mapped_and_text_columns():
    instruction, text, classification = (get_task_kind(k) for k in TASK_KEYS[:3])
    assert [k.needed_nouns for k in (instruction, text, classification)] == ["prompt and response", "text", "text and label"]
    mapping = {"prompt": "q", "response": "a", "context": "c"}
    assert instruction.mapped_columns(mapping) == [("prompt", "q"), ("response", "a"), ("context", "c")]
    assert classification.text_columns({"text": "q", "label": "y"}) == ["q"]  # the label is a class id, not text
    assert text.mapped_columns({"text_columns": ["b", "t"]}) == [("text_columns", "b"), ("text_columns", "t")]


def test_the_plain_prompt_format_is_rendered_from_one_place():
    assert render_plain_prompt("Hi?") == PLAIN_PROMPT_FORMAT.format(prompt="Hi?") == "### Question:\nHi?\n\n### Answer:\n"
    assert render_plain_prompt("Hi?", "Be kind.") == "### Context:\nBe kind.\n\n### Question:\nHi?\n\n### Answer:\n"


def test_every_kind_has_a_preview_function():
    # A task kind half-added (no preview) fails here; the worker's side is in tests/worker/training/test_task_kinds.py.
    from app.services.prompt_preview import PREVIEWS

    assert set(PREVIEWS) == set(TASK_KEYS)
