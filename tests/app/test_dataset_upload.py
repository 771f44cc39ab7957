"""Uploads: good files become datasets; bad ones get a plain message and leave nothing behind."""

import codecs

import pytest
from sqlalchemy import func, select

from app.models import Dataset, Job
from tests.app.helpers import SAMPLE_CSV, bearer, upload
from tests.conftest import sign_in


def _dataset_count(db) -> int:
    return db.scalar(select(func.count()).select_from(Dataset))


def _stored_files(settings) -> list:
    root = settings.artifacts_dir
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_sample_csv_upload_reports_rows_and_columns(client, make_user):
    _, _, _, token = make_user()
    response = upload(client, token, SAMPLE_CSV.read_bytes(), "northwind_support.csv")
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["row_count"] == 220
    assert body["columns"] == ["question", "answer", "category"]
    assert len(body["preview"]) == 10 and body["preview"][0]["question"]
    again = upload(client, token, SAMPLE_CSV.read_bytes(), "copy.csv")
    assert again.status_code == 200 and again.json()["already_uploaded"] and again.json()["id"] == body["id"]


@pytest.mark.parametrize(
    "content, delimiter, encoding",
    [
        ("question;answer\nWhere is my order?;On its way\nCan I return it?;Yes, within 60 days\n".encode("cp1252"), ";", "utf-8"),
        ("question\tanswer\nCafé hours?\tNine to five\nParking?\tBehind the shop\n".encode("cp1252"), "\t", "cp1252"),
        (codecs.BOM_UTF16_LE + 'question,answer\n"Größe, bitte?",M\nFarbe?,Blau\n'.encode("utf-16-le"), ",", "utf-16"),
        (b'question|answer\r\n"multi\r\nline"|ok\r\nplain|fine\r\n', "|", "utf-8"),
    ],
)
def test_encodings_and_delimiters_are_detected(client, make_user, content, delimiter, encoding):
    _, _, _, token = make_user()
    body = upload(client, token, content).json()
    assert body["delimiter"] == delimiter and body["encoding"] == encoding
    assert body["row_count"] == 2 and body["columns"] == ["question", "answer"]
    assert all(row["answer"] for row in body["preview"])


BAD_FILES = [
    ("binary.csv", bytes(range(256)) * 4, 415, "binary data"),
    ("archive.csv", b"PK\x03\x04" + b"\x00" * 100, 415, "ZIP archive"),
    ("empty.csv", b"", 422, "The file is empty"),
    ("blank.csv", b"\n\n  \n", 422, "The file is empty"),
    ("header-only.csv", b"question,answer\n", 422, "no data rows"),
]


@pytest.mark.parametrize("name, content, status, words", BAD_FILES)
def test_bad_files_get_a_plain_error_on_the_page_and_leave_nothing(client, make_user, db, settings, name, content, status, words):
    _, email, password, _ = make_user()
    csrf = sign_in(client, email, password)
    before_rows, before_files = _dataset_count(db), _stored_files(settings)
    response = client.post("/datasets", data={"csrf_token": csrf}, files={"file": (name, content, "text/csv")})
    assert response.status_code == status
    assert words in response.text and 'role="alert"' in response.text
    assert "Traceback" not in response.text
    assert _dataset_count(db) == before_rows
    assert _stored_files(settings) == before_files


@pytest.mark.parametrize("name, content, status, words", BAD_FILES)
def test_bad_files_get_a_plain_error_in_the_api(client, make_user, db, name, content, status, words):
    _, _, _, token = make_user()
    before = _dataset_count(db)
    response = upload(client, token, content, name)
    assert response.status_code == status and words in response.json()["detail"]
    assert _dataset_count(db) == before


def test_a_file_over_the_size_limit_is_refused(client, make_user, db, settings, monkeypatch):
    monkeypatch.setattr(settings, "max_upload_bytes", 1000)
    _, email, password, token = make_user()
    before_rows, before_files = _dataset_count(db), _stored_files(settings)
    big = b"question,answer\n" + b"why is the sky blue?,because of scattering\n" * 100
    response = upload(client, token, big)
    assert response.status_code == 413 and "larger than the upload limit" in response.json()["detail"]
    csrf = sign_in(client, email, password)
    page = client.post("/datasets", data={"csrf_token": csrf}, files={"file": ("big.csv", big, "text/csv")})
    assert page.status_code == 413 and "larger than the upload limit of 1000 bytes" in page.text
    assert _dataset_count(db) == before_rows and _stored_files(settings) == before_files


def test_a_job_on_columns_the_csv_lacks_is_refused(client, make_user, db, tiny_model_dir):
    _, email, password, token = make_user()
    dataset = upload(client, token, b"title,body\nHello,World\nAnother,Row\n").json()
    before = db.scalar(select(func.count()).select_from(Job))
    response = client.post(
        "/api/v1/jobs",
        headers=bearer(token),
        json={
            "dataset_id": dataset["id"],
            "column_mapping": {"prompt": "question", "response": "answer"},
            "base_model": "tiny-llama",
            "technique": "lora",
        },
    )
    assert response.status_code == 422
    assert "no column named 'question'" in response.json()["detail"]["errors"]["prompt"]
    csrf = sign_in(client, email, password)
    page = client.post(
        "/jobs",
        data={
            "csrf_token": csrf,
            "dataset_id": dataset["id"],
            "prompt_column": "missing",
            "response_column": "body",
            "base_model": "tiny-llama",
            "technique": "lora",
        },
    )
    assert page.status_code == 422 and "The job was not started" in page.text and "no column named" in page.text
    assert db.scalar(select(func.count()).select_from(Job)) == before


def test_absurd_hyperparameters_are_refused_on_the_form(client, make_user, db, tiny_model_dir):
    _, email, password, token = make_user()
    dataset = upload(client, token, SAMPLE_CSV.read_bytes()).json()
    csrf = sign_in(client, email, password)
    page = client.post(
        "/jobs",
        data={
            "csrf_token": csrf,
            "dataset_id": dataset["id"],
            "prompt_column": "question",
            "response_column": "answer",
            "base_model": "tiny-llama",
            "technique": "lora",
            "param_learning_rate": "50",
            "param_epochs": "-3",
        },
    )
    assert page.status_code == 422
    assert "Learning rate must be at most 1" in page.text and "Epochs must be at least 1" in page.text
