"""The training form: its column fields come from the task-kind registry, and a refused submit
builds the form's context once, keeping what the person chose."""

from __future__ import annotations

import re

from app.domain.task_kinds import TASK_KINDS
from app.web import train_form
from tests.app.helpers import SAMPLE_CSV, upload
from tests.conftest import sign_in


def test_the_form_has_one_column_field_per_role_of_every_task_kind(client, make_user):
    _, email, password, token = make_user("trainform")
    dataset = upload(client, token, SAMPLE_CSV.read_bytes()).json()
    sign_in(client, email, password)
    page = client.get(f"/datasets/{dataset['id']}").text
    for kind in TASK_KINDS.values():
        assert f'data-task="{kind.key}"' in page and kind.legend in page
        for role in kind.roles:
            select = re.search(rf'<select name="{role.form_field}" id="{role.form_field}"([^>]*)>(.*?)</select>', page, re.S)
            assert select is not None, role.form_field
            assert ("multiple" in select.group(1)) == role.many
            assert ("— none —" in select.group(2)) == (not role.required and not role.many)
            assert role.label in page and role.hint in page


def test_a_refused_submit_builds_the_form_context_once(client, make_user, monkeypatch):
    _, email, password, token = make_user("trainform-once")
    dataset = upload(client, token, SAMPLE_CSV.read_bytes()).json()
    csrf = sign_in(client, email, password)
    calls = []
    original = train_form.train_form_context
    monkeypatch.setattr(train_form, "train_form_context", lambda *a, **k: calls.append(k) or original(*a, **k))
    monkeypatch.setattr("app.web.jobs.train_form_context", train_form.train_form_context)
    monkeypatch.setattr("app.web.datasets.train_form_context", train_form.train_form_context)
    form = {
        "csrf_token": csrf,
        "dataset_id": dataset["id"],
        "task": "instruction",
        "prompt_column": "answer",
        "response_column": "answer",
        "base_model": "tiny-llama",
        "technique": "lora",
    }
    refused = client.post("/jobs", data=form)
    assert refused.status_code == 422 and "must be different columns" in refused.text
    assert len(calls) == 1 and calls[0]["guess"] == {"prompt": "answer", "response": "answer"}
    chosen = re.search(r'<select name="prompt_column".*?</select>', refused.text, re.S).group(0)
    assert '<option value="answer" selected>' in chosen
