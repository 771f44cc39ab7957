"""The bad-file corpus (tests/data/bad/): every nasty file gets a plain message naming the problem
(and the row and column where that applies), the server stays up, and nothing half-stored remains."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from app.models import Dataset
from tests.app.helpers import bearer, upload
from tests.conftest import sign_in

BAD = Path(__file__).resolve().parents[1] / "data" / "bad"


def _dataset_count(db) -> int:
    return db.scalar(select(func.count()).select_from(Dataset))


def _stored_files(settings) -> list:
    root = settings.artifacts_dir
    return sorted(p for p in root.rglob("*") if p.is_file() and ".tmp" not in p.parts) if root.exists() else []


def _temp_files(settings) -> list:
    tmp = settings.artifacts_dir / ".tmp"
    return sorted(tmp.rglob("*")) if tmp.exists() else []


# name, HTTP status, words the message must contain (the problem, and row/column where they apply)
REFUSED = [
    ("binary_junk.csv", 415, ["binary data"]),
    ("control_bytes.csv", 415, ["binary data"]),
    ("zip_renamed.csv", 415, ["ZIP archive"]),
    ("pdf_renamed.csv", 415, ["PDF document"]),
    ("png_renamed.csv", 415, ["PNG image"]),
    ("gzip_renamed.csv", 415, ["gzip-compressed"]),
    ("sqlite_renamed.csv", 415, ["SQLite database"]),
    ("old_excel.xls", 415, ["old Excel .xls"]),
    ("not_really.xlsx", 415, ["not an Excel workbook"]),
    ("damaged.xlsx", 415, ["could not be opened as an Excel workbook"]),
    ("empty.csv", 422, ["The file is empty"]),
    ("blank_lines.csv", 422, ["The file is empty"]),
    ("only_delimiters.csv", 422, ["The file is empty"]),
    ("header_only.csv", 422, ["no data rows"]),
    ("header_only_bom.csv", 422, ["no data rows"]),
    ("nul_bytes.csv", 415, ["Line 3", "NUL byte"]),
    ("unclosed_quote_middle.csv", 422, ["quote opened in line 3", "column 'answer'"]),
    ("unclosed_quote_end.csv", 422, ["quote opened in line 3", "column 'answer'", "never closed"]),
    ("invalid_json_line.jsonl", 422, ["Line 3", "not valid JSON"]),
    ("json_array_line.jsonl", 422, ["Line 2", "not an object"]),
    ("blank.jsonl", 422, ["The file is empty"]),
]


@pytest.mark.parametrize("name, status, words", REFUSED, ids=[r[0] for r in REFUSED])
def test_refused_files_get_a_plain_message_and_leave_nothing(client, make_user, db, settings, name, status, words):
    _, _, _, token = make_user()
    before_rows, before_files = _dataset_count(db), _stored_files(settings)
    response = upload(client, token, (BAD / name).read_bytes(), name)
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    for word in words:
        assert word in detail, detail
    assert "Traceback" not in detail
    assert _dataset_count(db) == before_rows
    assert _stored_files(settings) == before_files
    assert _temp_files(settings) == []
    assert client.get("/health").status_code == 200


@pytest.mark.parametrize("name", ["unclosed_quote_middle.csv", "zip_renamed.csv", "invalid_json_line.jsonl"])
def test_refused_files_show_the_message_on_the_upload_form(client, make_user, db, name):
    _, email, password, _ = make_user()
    csrf = sign_in(client, email, password)
    words = next(r[2] for r in REFUSED if r[0] == name)
    page = client.post(
        "/datasets",
        data={"csrf_token": csrf},
        files={"file": (name, (BAD / name).read_bytes(), "text/csv")},
        headers={"HX-Request": "true"},
    )
    assert page.status_code in (415, 422)
    assert 'id="upload-form"' in page.text and 'role="alert"' in page.text
    for word in words:
        assert word.replace("'", "&#39;") in page.text


def test_a_huge_number_of_columns_is_refused(client, make_user, db, settings):
    _, _, _, token = make_user()
    before_rows, before_files = _dataset_count(db), _stored_files(settings)
    header = ",".join(f"c{i}" for i in range(100_000)) + "\n"
    response = upload(client, token, (header + ",".join("x" for _ in range(100_000)) + "\n").encode(), "wide.csv")
    assert response.status_code == 422
    assert "100,000 columns" in response.json()["detail"] and "line 1" in response.json()["detail"]
    assert _dataset_count(db) == before_rows and _stored_files(settings) == before_files


def test_a_50_mb_cell_is_refused_with_its_line(client, make_user, db, settings):
    _, _, _, token = make_user()
    before_rows, before_files = _dataset_count(db), _stored_files(settings)
    content = b"question,answer\nshort,fine\nhuge," + b"a" * (50 * 1024 * 1024) + b"\n"
    response = upload(client, token, content, "huge-cell.csv")
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "line 3" in detail and "longer than 16 MB" in detail
    assert _dataset_count(db) == before_rows and _stored_files(settings) == before_files
    assert client.get("/health").status_code == 200


def test_an_upload_declared_over_the_limit_is_refused_before_its_body_is_read(client, make_user, settings):
    """Content-Length over the limit: 413 with the plain message, and not one body chunk read."""
    import asyncio

    from app.main import app

    _, _, _, token = make_user()
    reads = []

    async def receive():
        reads.append(1)
        return {"type": "http.request", "body": b"x" * 1024, "more_body": True}

    sent = []

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/v1/datasets",
        "raw_path": b"/api/v1/datasets",
        "root_path": "",
        "query_string": b"",
        "client": ("127.0.0.1", 1),
        "server": ("testserver", 80),
        "headers": [
            (b"content-type", b"multipart/form-data; boundary=x"),
            (b"content-length", str(50 * 1024**3).encode()),
            (b"authorization", f"Bearer {token}".encode()),
        ],
    }
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 413 and reads == []
    assert b"larger than the upload limit" in b"".join(m.get("body", b"") for m in sent[1:])


def test_a_line_of_many_megabytes_is_refused_before_it_is_read_whole(tmp_path):
    from app.services.tabular_formats import MAX_LINE_BYTES, TableError, open_table

    source = tmp_path / "one-line.csv"
    with open(source, "wb") as f:
        f.write(b"a,b\n")
        for _ in range(MAX_LINE_BYTES // (1024 * 1024) + 2):
            f.write(b"x," * (512 * 1024))
    with pytest.raises(TableError, match="Line 2 is longer than 64 MB without a line break"):
        open_table(source, "one-line.csv")


def test_mixed_encodings_in_one_file_are_read_line_by_line(client, make_user):
    _, _, _, token = make_user()
    body = upload(client, token, (BAD / "mixed_encodings.csv").read_bytes(), "mixed.csv").json()
    assert body["encoding"] == "utf-8+cp1252"
    assert [r["question"] for r in body["preview"]] == ["Café open?", "Größe M?", "Naïve?"]
    assert any("mixes UTF-8 and Windows-1252" in note for note in body["notes"])


def test_ragged_rows_are_kept_and_reported_with_their_lines(client, make_user):
    _, _, _, token = make_user()
    body = upload(client, token, (BAD / "ragged_rows.csv").read_bytes(), "ragged.csv").json()
    assert body["row_count"] == 4
    assert any("2 row(s)" in note and "lines 3, 5" in note for note in body["notes"]), body["notes"]
    assert body["preview"][1] == {"question": "Can I return it?", "answer": "Yes", "category": ""}


def test_duplicate_and_empty_headers_are_renamed_and_said(client, make_user):
    _, _, _, token = make_user()
    dup = upload(client, token, (BAD / "duplicate_headers.csv").read_bytes(), "dup.csv").json()
    assert dup["columns"] == ["question", "answer", "answer_2", "question_2"]
    assert any("Column 3 repeats the name 'answer'; it is called answer_2" in n for n in dup["notes"])
    empty = upload(client, token, (BAD / "empty_headers.csv").read_bytes(), "empty-headers.csv").json()
    assert empty["columns"] == ["question", "column_2", "answer", "column_4"]
    assert any("Column 2 had no name" in n for n in empty["notes"])


def test_formula_cells_are_inert_in_previews_pages_and_exports(client, make_user):
    _, email, password, token = make_user()
    body = upload(client, token, (BAD / "formula_injection.csv").read_bytes(), "formulas.csv").json()
    cells = [v for row in body["preview"] for v in row.values()]
    assert '\'=HYPERLINK("http://evil.example","click")' in cells and "'+SUM(A1:A2)" in cells and "'@cmd" in cells
    assert "'-2+3" in cells and "-5" in cells  # a plain negative number stays a number
    rows = client.get(f"/api/v1/datasets/{body['id']}/rows", headers=bearer(token)).json()["rows"]
    assert rows[0]["cells"]["question"].startswith("'=")
    sign_in(client, email, password)
    export = client.get(f"/datasets/{body['id']}/export.csv").text
    assert "'=HYPERLINK" in export and "\n=" not in export and ",@cmd" not in export
    page = client.get(f"/datasets/{body['id']}").text
    assert "&#39;=HYPERLINK" in page and ">=HYPERLINK" not in page


def test_crlf_and_quoted_multiline_cells_survive(client, make_user):
    _, _, _, token = make_user()
    body = upload(client, token, (BAD / "crlf_multiline.csv").read_bytes(), "crlf.csv").json()
    assert body["row_count"] == 2
    assert body["preview"][0]["question"] == "Line one\r\nline two"
    assert body["preview"][1]["answer"] == "multi\r\nline\r\nanswer"


def test_utf16_without_a_bom_is_recognised(client, make_user):
    _, _, _, token = make_user()
    body = upload(client, token, (BAD / "utf16_no_bom.csv").read_bytes(), "utf16.csv").json()
    assert body["encoding"] == "utf-16-le" and body["delimiter"] == "\t"
    assert body["preview"][0]["question"] == "Grüße?"


def test_a_label_column_with_one_class_is_refused_for_classification(client, make_user, db):
    from app.services import column_checks

    _, _, _, token = make_user()
    body = upload(client, token, (BAD / "label_one_class.csv").read_bytes(), "one-class.csv").json()
    labels = client.get(f"/api/v1/datasets/{body['id']}/labels", params={"column": "label"}, headers=bearer(token)).json()
    assert labels["counts"] == [{"label": "positive", "count": 3}]
    assert "only one label ('positive')" in labels["problems"][0]
    dataset = db.get(Dataset, body["id"])
    assert "only one label" in column_checks.column_problems(dataset, "classification", {"text": "text", "label": "label"})["label"]


def test_rare_labels_get_a_warning(client, make_user):
    _, _, _, token = make_user()
    body = upload(client, token, (BAD / "rare_labels.csv").read_bytes(), "rare.csv").json()
    labels = client.get(f"/api/v1/datasets/{body['id']}/labels", params={"column": "label"}, headers=bearer(token)).json()
    assert labels["problems"] == []
    assert "2 label(s) have fewer than 5 examples ('neutral', 'weird')" in labels["warnings"][0]


def test_all_empty_responses_are_named(client, make_user, db):
    from app.services import column_checks

    _, _, _, token = make_user()
    body = upload(client, token, (BAD / "all_empty_responses.csv").read_bytes(), "no-answers.csv").json()
    assert body["profile"]["columns"][1]["empty"] == 3 and body["profile"]["columns"][1]["type"] == "empty"
    problems = column_checks.column_problems(db.get(Dataset, body["id"]), "instruction", {"prompt": "question", "response": "answer"})
    assert problems == {"response": "Column 'answer' is empty in every row. Choose the column that holds the responses."}


def test_a_sheet_that_does_not_exist_is_named_with_the_ones_that_do(client, make_user, db, settings):
    _, _, _, token = make_user()
    before = _dataset_count(db)
    response = client.post(
        "/api/v1/datasets",
        headers=bearer(token),
        data={"sheet": "Nope"},
        files={"file": ("book.xlsx", (BAD / "wrong_sheet.xlsx").read_bytes(), "application/octet-stream")},
    )
    assert response.status_code == 422
    assert response.json()["detail"] == "The workbook has no sheet named 'Nope'. Its sheets are: Tickets, Other."
    assert _dataset_count(db) == before


def test_the_corpus_has_at_least_30_files():
    assert len([p for p in BAD.iterdir() if p.is_file()]) >= 30


# ---------------------------------------------------------------- property: random CSV text never crashes the ingest

_cell = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
_csv_text = st.one_of(
    st.text(max_size=300),
    st.lists(st.lists(_cell, min_size=0, max_size=5), min_size=0, max_size=8).map(lambda rows: "\n".join(st_join(row) for row in rows)),
)


def st_join(row: list[str]) -> str:
    return ",".join(row)


_TOKENS = [
    b'"',
    b",",
    b";",
    b"\t",
    b"|",
    b"\n",
    b"\r\n",
    b"\r",
    b"a",
    b"\xc3\xa9",
    b"\xe9",
    b"\xff\xfe",
    b"\xfe\xff",
    b"\xef\xbb\xbf",
    b"\x00",
    b"{",
    b"}",
    b"[",
    b":",
    b"1",
    b" ",
    b"=",
    b"@",
    b"\xf0\x9f\x98\x80",
    b"\x1b",
    b'{"a": 1}\n',
]


@hypothesis_settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(
    data=st.lists(st.sampled_from(_TOKENS), max_size=60).map(b"".join) | st.binary(max_size=200),
    name=st.sampled_from(["in.csv", "in.jsonl", "in.xlsx", "in.txt"]),
)
def test_random_bytes_never_raise_anything_but_a_plain_dataset_error(tmp_path_factory, data, name):
    from app.services import dataset_normalise, tabular_formats
    from app.services.tabular_formats import TableError

    work = tmp_path_factory.mktemp("bytes")
    source = work / name
    source.write_bytes(data)
    try:
        report = dataset_normalise.write_normalised(tabular_formats.open_table(source, name), work / "out.csv", source=source)
    except TableError as exc:
        assert exc.message and exc.status in (413, 415, 422)
    else:
        assert report.row_count >= 1 and report.profile["row_count"] == report.row_count


@hypothesis_settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(
    text=_csv_text,
    encoding=st.sampled_from(["utf-8", "utf-16", "cp1252", "utf-8-sig"]),
    delimiter=st.sampled_from([",", ";", "\t", "|"]),
    name=st.sampled_from(["in.csv", "in.csv", "in.txt", "in.jsonl"]),
)
def test_random_csv_text_never_raises_anything_but_a_plain_dataset_error(tmp_path_factory, text, encoding, delimiter, name):
    from app.services import dataset_normalise, tabular_formats
    from app.services.tabular_formats import TableError

    text = text.replace(",", delimiter)
    try:
        data = text.encode(encoding)
    except UnicodeEncodeError:
        data = text.encode("utf-8")
    work = tmp_path_factory.mktemp("prop")
    source = work / name
    source.write_bytes(data)
    try:
        report = dataset_normalise.write_normalised(tabular_formats.open_table(source, name), work / "out.csv", source=source)
    except TableError as exc:
        assert exc.message and exc.status in (413, 415, 422)
        assert "Traceback" not in exc.message
    else:
        assert report.row_count >= 1 and report.columns
        assert report.profile["row_count"] == report.row_count
        assert len(list(csv.reader(io.StringIO((work / "out.csv").read_text(encoding="utf-8"))))) == report.row_count + 1


@hypothesis_settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.lists(st.sampled_from(_TOKENS), max_size=40).map(b"".join), name=st.sampled_from(["a.csv", "a.jsonl", "a.xlsx"]))
def test_random_uploads_through_the_api_never_break_the_server_or_leave_files(client, make_user, db, settings, data, name):
    _, _, _, token = make_user()
    before_rows = _dataset_count(db)
    response = upload(client, token, data, name)
    assert response.status_code in (200, 201, 413, 415, 422), response.text
    if response.status_code >= 400:
        assert response.json()["detail"] and _dataset_count(db) == before_rows
    assert _temp_files(settings) == []
