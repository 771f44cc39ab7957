"""Excel and JSON Lines through the same flow; the profile (types, empties, duplicates, personal
data, token lengths), the paged and searchable preview, masking, and deleting a dataset."""

from __future__ import annotations

import io
import json

from openpyxl import Workbook
from sqlalchemy import select

from app.models import Dataset
from tests.app.helpers import SAMPLE_CSV, bearer, upload
from tests.conftest import sign_in


def _workbook_bytes() -> bytes:
    book = Workbook()
    first = book.active
    first.title = "Notes"
    first.append(["just", "notes"])
    first.append(["a", "b"])
    tickets = book.create_sheet("Tickets")
    tickets.append(["question", "answer", "priority"])
    tickets.append(["Where is my order?", "On its way", 1])
    tickets.append(["Can I return it?", "@here is not run", 2.0])
    tickets.append([None, None, None])
    tickets.append(["Gift wrap?", "Yes", 3])
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def test_xlsx_first_sheet_or_a_chosen_one(client, make_user, settings):
    _, _, _, token = make_user()
    data = _workbook_bytes()
    first = client.post("/api/v1/datasets", headers=bearer(token), files={"file": ("book.xlsx", data, "application/octet-stream")}).json()
    assert first["source_format"] == "xlsx" and first["sheet_name"] == "Notes" and first["columns"] == ["just", "notes"]
    assert any("2 sheets (Notes, Tickets)" in n for n in first["notes"])
    chosen = client.post(
        "/api/v1/datasets",
        headers=bearer(token),
        data={"sheet": "Tickets"},
        files={"file": ("book.xlsx", data, "application/octet-stream")},
    )
    assert chosen.status_code == 201, chosen.text
    body = chosen.json()
    assert body["id"] != first["id"] and body["sheet_name"] == "Tickets" and body["row_count"] == 3
    assert body["preview"][0] == {"question": "Where is my order?", "answer": "On its way", "priority": "1"}
    assert body["preview"][1]["answer"] == "'@here is not run" and body["preview"][1]["priority"] == "2"
    assert body["profile"]["columns"][2]["type"] == "integer"
    again = client.post(
        "/api/v1/datasets",
        headers=bearer(token),
        data={"sheet": "Tickets"},
        files={"file": ("copy.xlsx", data, "application/octet-stream")},
    )
    assert again.status_code == 200 and again.json()["id"] == body["id"] and again.json()["already_uploaded"]


def test_jsonl_becomes_columns_of_every_key(client, make_user):
    _, _, _, token = make_user()
    lines = [
        {"question": "Where is my order?", "answer": "On its way"},
        {"question": "Tags?", "answer": "Yes", "tags": ["a", "b"]},
        {"question": "Count?", "answer": 3, "extra": None},
    ]
    body = upload(client, token, ("\n".join(json.dumps(o) for o in lines) + "\n").encode(), "qa.jsonl").json()
    assert body["source_format"] == "jsonl" and body["columns"] == ["question", "answer", "tags", "extra"]
    assert body["row_count"] == 3
    assert body["preview"][1]["tags"] == '["a", "b"]' and body["preview"][2]["answer"] == "3" and body["preview"][0]["tags"] == ""


PROFILE_CSV = (
    "question,answer,label,created\n"
    "Where is my order?,It ships today. Mail jane.doe@example.com,shipping,2024-01-05\n"
    "Where is my order?,It ships today. Mail jane.doe@example.com,shipping,2024-01-05\n"
    "where is MY order,It ships today - mail jane.doe@example.com!,shipping,2024-01-05\n"
    "Pay by card?,Card 4111 1111 1111 1111 works; call +49 30 1234567,billing,2024-01-06\n"
    "Refund?,IBAN DE89 3704 0044 0532 0130 00 please,billing,\n"
    "Not a card,4111 1111 1111 1112 fails Luhn,other,2024-01-07\n"
)


def test_profile_types_empties_duplicates_and_personal_data(client, make_user):
    _, _, _, token = make_user()
    body = upload(client, token, PROFILE_CSV.encode(), "profile.csv").json()
    profile = client.get(f"/api/v1/datasets/{body['id']}/profile", headers=bearer(token)).json()
    assert profile == body["profile"]
    assert profile["row_count"] == 6
    columns = {c["name"]: c for c in profile["columns"]}
    assert columns["created"]["type"] == "date" and columns["created"]["empty"] == 1
    assert columns["label"]["top_values"][0] == ["billing", 2] or columns["label"]["top_values"][0] == ["shipping", 3]
    assert profile["duplicates"]["exact"] == 1 and profile["duplicates"]["exact_examples"] == [{"row": 2, "same_as": 1}]
    assert profile["duplicates"]["near"] == 1 and profile["duplicates"]["near_examples"] == [{"row": 3, "same_as": 1}]
    found = columns["answer"]["personal_data"]
    assert found["email"]["count"] == 3 and found["card"]["count"] == 1 and found["iban"]["count"] == 1 and found["phone"]["count"] == 1
    assert found["card"]["examples"][0]["row"] == 4 and "jane.doe@example.com" not in json.dumps(found)
    assert "card" not in columns["question"]["personal_data"]


def test_masking_writes_a_training_copy_and_keeps_the_original(client, make_user, db, settings):
    from app.services import stored_rows
    from app.services.artifacts import get_artifact_store

    _, email, password, token = make_user()
    body = upload(client, token, PROFILE_CSV.encode(), "mask.csv").json()
    csrf = sign_in(client, email, password)
    page = client.get(f"/datasets/{body['id']}").text
    assert "Mask personal data in the training copy" in page and "Payment card numbers" in page
    client.post(f"/datasets/{body['id']}/personal-data", data={"csrf_token": csrf, "mask": "1"})
    db.expire_all()
    dataset = db.get(Dataset, body["id"])
    assert dataset.pii_masked
    store = get_artifact_store()
    pairs = stored_rows.instruction_pairs(store, dataset, "question", "answer")
    assert (
        pairs[0][1] == "It ships today. Mail [EMAIL]" and "[CARD]" in pairs[3][1] and "[PHONE]" in pairs[3][1] and "[IBAN]" in pairs[4][1]
    )
    assert "4111 1111 1111 1112" in pairs[5][1]
    assert next(stored_rows.iter_rows(store, dataset))["answer"] == "It ships today. Mail jane.doe@example.com"
    assert "Train on the original instead" in client.get(f"/datasets/{body['id']}").text
    off = client.post(f"/api/v1/datasets/{body['id']}/personal-data", headers=bearer(token), json={"mask": False}).json()
    assert off == {"pii_masked": False, "masked": {}}
    on = client.post(f"/api/v1/datasets/{body['id']}/personal-data", headers=bearer(token), json={"mask": True}).json()
    assert on["masked"] == {"card": 1, "email": 3, "iban": 1, "phone": 1}


def test_paged_and_searchable_preview(client, make_user):
    _, email, password, token = make_user()
    rows = "".join(f"question {i},answer {i}{' refund' if i % 10 == 0 else ''}\n" for i in range(1, 2601))
    body = upload(client, token, ("question,answer\n" + rows).encode(), "paged.csv").json()
    page = client.get(f"/api/v1/datasets/{body['id']}/rows", params={"page": 42}, headers=bearer(token)).json()
    assert page["rows"][0] == {"row": 1026, "cells": {"question": "question 1026", "answer": "answer 1026"}}
    assert len(page["rows"]) == 25 and page["has_next"] and page["total"] == 2600
    last = client.get(f"/api/v1/datasets/{body['id']}/rows", params={"page": 104}, headers=bearer(token)).json()
    assert last["rows"][-1]["row"] == 2600 and not last["has_next"]
    found = client.get(f"/api/v1/datasets/{body['id']}/rows", params={"q": "REFUND", "page": 2}, headers=bearer(token)).json()
    assert [r["row"] for r in found["rows"]][:2] == [260, 270] and found["has_next"]
    sign_in(client, email, password)
    partial = client.get(f"/datasets/{body['id']}/rows", params={"q": "answer 2599"}, headers={"HX-Request": "true"})
    assert partial.text.lstrip().startswith('<div id="dataset-rows">') and "question 2599" in partial.text and "<html" not in partial.text
    assert "1 match " in partial.text


def test_token_lengths_with_the_base_models_own_tokenizer(client, make_user, settings):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    folder = settings.models_dir / "tok-only"
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.train_from_iterator(
        ["where is my order", "it ships today"] * 50, trainers.BpeTrainer(vocab_size=60, special_tokens=["[UNK]"])
    )
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "config.json").write_text("{}")
    _, email, password, token = make_user()
    csv_text = "question,answer\n" + "".join(f"where is my order,{'it ships today ' * n}\n" for n in range(1, 41))
    body = upload(client, token, csv_text.encode(), "tokens.csv").json()
    report = client.get(
        f"/api/v1/datasets/{body['id']}/token-lengths",
        headers=bearer(token),
        params={"base_model": "tok-only", "max_length": 60, "columns": ["answer"]},
    ).json()
    assert report["measured_rows"] == 40 and not report["sampled"]
    assert report["max"] == 120 and report["over_max_length"] == 20 and sum(b["count"] for b in report["histogram"]) == 40
    sign_in(client, email, password)
    partial = client.get(
        f"/datasets/{body['id']}/token-lengths",
        params={"base_model": "tok-only", "max_length": 60, "columns": "answer"},
        headers={"HX-Request": "true"},
    )
    assert 'id="token-lengths"' in partial.text and 'id="over-max-length">20<' in partial.text
    assert 'class="histogram"' in partial.text


def test_deleting_asks_first_and_removes_rows_and_files(client, make_user, db, settings):
    _, email, password, token = make_user()
    body = upload(client, token, SAMPLE_CSV.read_bytes().replace(b"\n", b"\n", 1) + b"extra,row,x\n", "to-delete.csv").json()
    folder = settings.artifacts_dir / "datasets" / str(body["id"])
    assert (folder / "rows.csv").is_file() and (folder / "original.csv").is_file()
    csrf = sign_in(client, email, password)
    page = client.get(f"/datasets/{body['id']}").text
    assert 'data-confirm="Delete this dataset and its files?' in page
    client.post(f"/datasets/{body['id']}/delete", data={"csrf_token": csrf})
    assert db.scalar(select(Dataset).where(Dataset.id == body["id"])) is None
    assert not folder.exists()


def test_column_guesses_for_each_task():
    from app.services.column_guess import guess_columns

    rows = [
        {"id": str(i), "subject": f"My parcel number {i} never arrived, what now?", "reply": "We are sorry. " * 8, "team": t}
        for i, t in zip(range(40), ["billing", "shipping"] * 20)
    ]
    columns = ["id", "subject", "reply", "team"]
    assert guess_columns("instruction", columns, rows)["prompt"] == "subject"
    assert guess_columns("instruction", columns, rows)["response"] == "reply"
    assert (
        guess_columns("classification", columns, rows) == {"text": "reply", "label": "team"}
        or guess_columns("classification", columns, rows)["label"] == "team"
    )
    assert (
        "reply" in guess_columns("text", columns, rows)["text_columns"] and "id" not in guess_columns("text", columns, rows)["text_columns"]
    )
    named = guess_columns("instruction", ["system_prompt", "question", "answer", "context"], [])
    assert named == {"prompt": "question", "response": "answer", "system": "system_prompt", "context": "context"} or named["prompt"] in (
        "question",
        "system_prompt",
    )


def test_stratified_split_and_leakage():
    from app.services.validation_split import leakage_check, split_train_validation

    rows = [(f"text {i}", "a" if i < 80 else "b") for i in range(100)]
    train, validation = split_train_validation(rows, 0.1, seed=3, stratify_by=lambda r: r[1])
    assert len(validation) == 10 and sum(r[1] == "b" for r in validation) == 2 and len(train) == 90
    tiny_train, tiny_validation = split_train_validation([("x", "a"), ("y", "b")], 0.01, seed=0, stratify_by=lambda r: r[1])
    assert len(tiny_validation) == 1 and len(tiny_train) == 1
    plain_train, plain_validation = split_train_validation(list(range(5)), 0.0, seed=1)
    assert len(plain_validation) == 1 and len(plain_train) == 4
    report = leakage_check(["Where is my order?", "Refund please"], ["Where is my order?", "REFUND, please!", "Something new"])
    assert (report.exact, report.near) == (1, 1) and "2 of 3 validation rows" in report.message


def test_a_clean_csv_is_stored_as_uploaded_and_a_late_fix_replays_the_rows_before_it(client, make_user, settings):
    _, _, _, token = make_user()
    clean = "question,answer\n" + "".join(f'q{i},"a{i}\nsecond line"\n' for i in range(1, 1501))
    body = upload(client, token, clean.encode(), "clean.csv").json()
    folder = settings.artifacts_dir / "datasets" / str(body["id"])
    assert (folder / "rows.csv").read_bytes() == clean.encode()  # nothing rewritten
    page = client.get(f"/api/v1/datasets/{body['id']}/rows", params={"page": 49}, headers=bearer(token)).json()
    assert page["rows"][0] == {"row": 1201, "cells": {"question": "q1201", "answer": "a1201\nsecond line"}}
    late_fix = clean + "\n,\nq1501,a1501,extra\nq1502,a1502\n"
    fixed = upload(client, token, late_fix.encode(), "late.csv").json()
    assert fixed["row_count"] == 1502 and any("(lines 3,004)" in n for n in fixed["notes"]), fixed["notes"]
    stored = (settings.artifacts_dir / "datasets" / str(fixed["id"]) / "rows.csv").read_bytes().decode()
    assert stored.startswith("question,answer\r\nq1,") and stored.count("\r\n") == 1503
    tail = client.get(f"/api/v1/datasets/{fixed['id']}/rows", params={"page": 61}, headers=bearer(token)).json()["rows"]
    assert [r["cells"]["question"] for r in tail] == ["q1501", "q1502"]


def test_split_check_reports_leakage_between_training_and_validation(client, make_user):
    _, _, _, token = make_user()
    rows = "".join(f"Question number {i}?,Answer {i}\n" for i in range(20)) + "question NUMBER 3,Other answer\n" * 20
    body = upload(client, token, ("question,answer\n" + rows).encode(), "leaky.csv").json()
    check = client.get(
        f"/api/v1/datasets/{body['id']}/split-check",
        headers=bearer(token),
        params={"task": "instruction", "prompt": "question", "response": "answer", "validation_fraction": 0.25},
    ).json()
    assert check["validation_rows"] == 10 and check["train_rows"] == 30
    assert check["leakage"]["exact"] + check["leakage"]["near"] >= 1 and "also appear in training" in check["leakage"]["message"]
    labels = "".join(f"text {i},{'a' if i < 30 else 'b'}\n" for i in range(40))
    clf = upload(client, token, ("text,label\n" + labels).encode(), "clf.csv").json()
    strat = client.get(
        f"/api/v1/datasets/{clf['id']}/split-check",
        headers=bearer(token),
        params={"task": "classification", "text": "text", "label": "label"},
    ).json()
    assert strat == {
        "train_rows": 36,
        "validation_rows": 4,
        "stratified": True,
        "source": "split",
        "leakage": {"exact": 0, "near": 0, "validation_rows": 4, "examples": [], "message": None},
    }


def test_split_check_with_a_validation_file_checks_every_file_row_against_training(client, make_user):
    _, _, _, token = make_user()
    train = upload(
        client, token, ("question,answer\n" + "".join(f"Question {i}?,Answer {i}\n" for i in range(30))).encode(), "train.csv"
    ).json()
    holdout = upload(client, token, b"question,answer\nquestion 4,Other\nSomething new?,New\nQUESTION 7?!,x\n", "holdout.csv").json()
    params = {"task": "instruction", "prompt": "question", "response": "answer", "validation_dataset_id": holdout["id"]}
    check = client.get(f"/api/v1/datasets/{train['id']}/split-check", headers=bearer(token), params=params).json()
    assert check["source"] == "file" and check["validation_dataset_id"] == holdout["id"]
    assert (check["train_rows"], check["validation_rows"]) == (30, 3)
    assert check["leakage"]["near"] + check["leakage"]["exact"] == 2 and "also appear in training" in check["leakage"]["message"]
    wrong_columns = upload(client, token, b"text,label\nhello,a\n", "other.csv").json()
    refused = client.get(
        f"/api/v1/datasets/{train['id']}/split-check",
        headers=bearer(token),
        params={**params, "validation_dataset_id": wrong_columns["id"]},
    )
    assert refused.status_code == 422 and "has no column named 'question'" in refused.json()["detail"]
    _, _, _, stranger = make_user()
    theirs = upload(client, stranger, b"question,answer\nq,a\n", "theirs.csv").json()
    hidden = client.get(
        f"/api/v1/datasets/{train['id']}/split-check", headers=bearer(token), params={**params, "validation_dataset_id": theirs["id"]}
    )
    assert hidden.status_code == 404


def test_mapping_checks_and_guesses_read_the_task_kind_registry():
    import pytest

    from app.domain.task_kinds import TASK_KINDS, UnknownTaskKind
    from app.models import Dataset
    from app.services.column_checks import column_problems
    from app.services.column_guess import guess_columns

    profile = {"columns": [{"name": name, "filled": 3, "top_values": [["a", 2], ["b", 1]], "distinct": 2} for name in ("text", "label")]}
    dataset = Dataset(columns=["text", "label"], profile=profile)
    classification = TASK_KINDS["classification"]
    # One wording for the same error: the registry's, as the job form gets it.
    assert column_problems(dataset, "classification", {"text": "text", "label": "text"}) == {"label": classification.distinct[0][2]}
    assert column_problems(dataset, "classification", {"text": "text"}) == {"label": classification.role("label").missing_message()}
    assert column_problems(dataset, "text", {"text_columns": []}) == {
        "text_columns": TASK_KINDS["text"].role("text_columns").missing_message()
    }
    with pytest.raises(UnknownTaskKind):
        column_problems(dataset, "no-such-task", {})
    with pytest.raises(UnknownTaskKind):
        guess_columns("no-such-task", ["text", "label"])


def test_the_split_check_uses_the_rows_a_job_trains_on(client, make_user):
    _, _, _, token = make_user()
    rows = "".join(f"Text number {i},\n" for i in range(20)) + "".join(f",Text number {i}\n" for i in range(20))
    body = upload(client, token, ("first,second\n" + rows).encode(), "parts.csv").json()
    check = client.get(
        f"/api/v1/datasets/{body['id']}/split-check",
        headers=bearer(token),
        params={"task": "text", "text_columns": ["first", "second"], "validation_fraction": 0.25},
    ).json()
    # Training reads the chosen columns joined, empty ones left out: the same text in the first
    # column of one row and the second of another is the same training text, so it leaks.
    assert (check["train_rows"], check["validation_rows"]) == (30, 10), check
    assert check["leakage"]["exact"] >= 1 and "also appear in training" in check["leakage"]["message"], check
