"""Odd input gets a plain 4xx, never a server error: non-finite and huge numbers, deeply nested
JSON, a NUL byte in a filename, ids beyond the database's range, and the token-length page
without htmx."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.models import Dataset
from tests.app.helpers import SAMPLE_CSV, bearer, upload
from tests.conftest import sign_in


@pytest.fixture
def raw_client():
    """A client that answers a server error with its 500 page instead of raising it into the test."""
    from app.main import app

    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "1e400", "9" * 5000, "²"])
def test_non_finite_or_huge_numbers_on_the_playground_form_are_refused(raw_client, make_user, value):
    _, email, password, _ = make_user()
    csrf = sign_in(raw_client, email, password)
    for field in ("max_new_tokens", "temperature"):
        response = raw_client.post("/playground", data={"csrf_token": csrf, "prompt": "Hi", field: value, "ids": "1"})
        assert response.status_code == 422, (field, value, response.text[:300])
        assert "must be" in response.text


@pytest.mark.parametrize("value", ["1e400", "inf", "nan", "-1e400", "9" * 5000])
def test_non_finite_parameters_on_the_estimate_are_refused(raw_client, make_user, tiny_model_dir, value):
    _, email, password, token = make_user()
    dataset = upload(raw_client, token, SAMPLE_CSV.read_bytes()).json()
    csrf = sign_in(raw_client, email, password)
    form = {"csrf_token": csrf, "dataset_id": dataset["id"], "base_model": "tiny-llama", "technique": "lora"}
    for name in ("param_epochs", "param_learning_rate"):
        response = raw_client.post("/jobs/estimate", data={**form, name: value}, headers={"HX-Request": "true"})
        assert response.status_code == 422, (name, value, response.text[:300])
        assert "Fix the settings to see an estimate" in response.text
        assert ("Epochs must be a whole number" if name == "param_epochs" else "Learning rate must be a number") in response.text


def test_non_finite_parameters_in_the_api_are_refused(raw_client, make_user, tiny_model_dir):
    _, _, _, token = make_user()
    dataset = upload(raw_client, token, SAMPLE_CSV.read_bytes()).json()
    body = {
        "dataset_id": dataset["id"],
        "base_model": "tiny-llama",
        "technique": "lora",
        "column_mapping": {"prompt": "question", "response": "answer"},
        "params": {"epochs": 1e400},  # json.dumps writes Infinity, which Python's JSON reader accepts
    }
    response = raw_client.post("/api/v1/jobs", headers={**bearer(token), "Content-Type": "application/json"}, content=json.dumps(body))
    assert response.status_code == 422, response.text
    assert "Epochs must be a whole number" in response.text


def test_a_jsonl_line_of_200k_nested_brackets_is_refused_with_its_line(raw_client, make_user, db):
    _, _, _, token = make_user()
    before = db.scalar(select(func.count()).select_from(Dataset))
    content = b'{"question": "ok", "answer": "fine"}\n{"question": ' + b"[" * 200_000 + b"]" * 200_000 + b"}\n"
    response = upload(raw_client, token, content, "deep.jsonl")
    assert response.status_code == 422, response.text[:300]
    assert response.json()["detail"].startswith("Line 2 nests its values too deeply")
    assert db.scalar(select(func.count()).select_from(Dataset)) == before


def _multipart(filename: bytes, content: bytes, csrf: str | None = None) -> tuple[bytes, dict[str, str]]:
    """A multipart body written by hand: clients percent-encode a NUL in a filename, an attacker does not."""
    fields = b""
    if csrf:
        fields = b'--XYZ\r\nContent-Disposition: form-data; name="csrf_token"\r\n\r\n' + csrf.encode() + b"\r\n"
    body = (
        fields + b'--XYZ\r\nContent-Disposition: form-data; name="file"; filename="' + filename + b'"\r\n'
        b"Content-Type: text/csv\r\n\r\n" + content + b"\r\n--XYZ--\r\n"
    )
    return body, {"Content-Type": "multipart/form-data; boundary=XYZ"}


@pytest.mark.parametrize("filename", [b"data\x00.csv", b"da\x00ta.c\x00sv", b"\x00", b"tab\tand\x1b[31mescape.csv"])
def test_a_nul_byte_in_a_filename_is_dropped(raw_client, make_user, filename):
    _, email, password, token = make_user()
    content = SAMPLE_CSV.read_bytes().replace(b"question", b"q" + filename.hex().encode())  # a new file each time
    body, headers = _multipart(filename, content)
    response = raw_client.post("/api/v1/datasets", headers={**bearer(token), **headers}, content=body)
    assert response.status_code == 201, (filename, response.status_code, response.text[:300])
    assert "\x00" not in response.json()["original_filename"] and "\x00" not in response.json()["name"]
    csrf = sign_in(raw_client, email, password)
    body, headers = _multipart(filename, content + b"one,more,row\n", csrf)
    page = raw_client.post("/datasets", headers=headers, content=body, follow_redirects=False)
    assert page.status_code == 303, page.text[:300]


def test_the_token_length_page_without_htmx_renders(raw_client, make_user):
    _, email, password, token = make_user()
    dataset = upload(raw_client, token, SAMPLE_CSV.read_bytes()).json()
    sign_in(raw_client, email, password)
    page = raw_client.get(f"/datasets/{dataset['id']}/token-lengths", params={"base_model": "nope", "max_length": "1e400"})
    assert page.status_code == 200, page.text[:300]
    assert "Choose an installed base model to count tokens with." in page.text and "<html" in page.text


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/datasets/99999999999999999999",
        "/api/v1/datasets/9223372036854775808",
        "/api/v1/jobs/2147483648",
        "/api/v1/adapters/-1",
        "/datasets/99999999999999999999",
        "/compare?ids=99999999999999999999,1",
        "/api/v1/compare?ids=99999999999999999999",
        "/playground?ids=²",
    ],
)
def test_ids_beyond_the_databases_range_are_not_found(raw_client, make_user, path):
    _, email, password, token = make_user()
    sign_in(raw_client, email, password)
    response = raw_client.get(path, headers=bearer(token))
    assert response.status_code in (200, 404, 422), (path, response.status_code, response.text[:300])


def test_control_characters_in_a_job_name_are_dropped(raw_client, make_user, tiny_model_dir):
    # Escapes and line breaks are dropped; a NUL (a server error on PostgreSQL) is refused like in
    # any text (app/http/nul_text.py, tests/app/test_nul_text.py).
    _, _, _, token = make_user()
    dataset = upload(raw_client, token, SAMPLE_CSV.read_bytes()).json()
    body = {
        "dataset_id": dataset["id"],
        "base_model": "tiny-llama",
        "technique": "lora",
        "column_mapping": {"prompt": "question", "response": "answer"},
    }
    named = raw_client.post("/api/v1/jobs", headers=bearer(token), json={**body, "name": "night\x07ly\x1b[2J run\n"})
    assert named.status_code == 201, named.text[:300]
    assert named.json()["name"] == "nightly[2J run"
    unnamed = raw_client.post("/api/v1/jobs", headers=bearer(token), json={**body, "name": "\x1b\t"})
    assert unnamed.status_code == 201 and unnamed.json()["name"].endswith("· LoRA")
    refused = raw_client.post("/api/v1/jobs", headers=bearer(token), json={**body, "name": "night\x00ly"})
    assert refused.status_code == 422 and refused.json() == {"detail": "Text may not contain NUL characters (field name)."}
