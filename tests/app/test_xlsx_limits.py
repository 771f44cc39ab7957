"""Spreadsheet bombs are refused before they are inflated, and a sheet is read under row and text
limits; a workbook whose first sheet is a cover takes the first sheet with data and says so."""

from __future__ import annotations

import io
import time
import tracemalloc
from dataclasses import replace

import pytest
from openpyxl import Workbook
from sqlalchemy import func, select

from app.models import Dataset
from app.services.tabular_formats import TableError, open_table
from app.services.xlsx_reader import XlsxLimits
from tests.app.helpers import bearer
from tests.app.zip_bombs import SHEET_END, SHEET_START, MiB, inline_row, shared_row, shared_strings_bomb, workbook

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def _upload(client, token, path, name="book.xlsx"):
    return client.post("/api/v1/datasets", headers=bearer(token), files={"file": (name, path.read_bytes(), XLSX)})


def _count(db) -> int:
    return db.scalar(select(func.count()).select_from(Dataset))


def _read_all(path, limits=None, trace=True):
    """Open and read every row, as the ingest does; returns (seconds, peak traced bytes, error).
    Tracing memory slows Python ~10 times; the timing without it is the one that counts."""
    if trace:
        tracemalloc.start()
    started = time.monotonic()
    error = None
    try:
        table = open_table(path, "book.xlsx") if limits is None else _open_with(path, limits)
        for _ in table.rows:
            pass
    except TableError as exc:
        error = exc
    finally:
        peak = tracemalloc.get_traced_memory()[1] if trace else 0
        tracemalloc.stop()
    return time.monotonic() - started, peak, error


def _open_with(path, limits):
    from app.services.xlsx_reader import read_xlsx

    return read_xlsx(path, None, limits)


def test_a_gigabyte_of_shared_strings_is_refused_unopened(client, make_user, db, tmp_path):
    bomb = shared_strings_bomb(tmp_path / "bomb.xlsx", 1024 * MiB)
    assert bomb.stat().st_size < 2 * MiB  # 1 GiB unpacked
    seconds, peak, error = _read_all(bomb)
    assert error is not None and error.status == 413, error
    assert "'xl/sharedStrings.xml' unpacks to 1.0 GB" in error.message and "TAILOR_XLSX_MAX_PART_BYTES" in error.message
    assert seconds < 2 and peak < 20 * MiB
    _, _, _, token = make_user()
    before = _count(db)
    response = _upload(client, token, bomb)
    assert response.status_code == 413 and "256.0 MB unpacked" in response.json()["detail"]
    assert _count(db) == before


def test_a_part_packed_a_thousand_times_is_refused_as_a_bomb(tmp_path):
    bomb = shared_strings_bomb(tmp_path / "dense.xlsx", 200 * MiB)  # under the part limit, but packed ~1,000 times
    seconds, peak, error = _read_all(bomb)
    assert error is not None and error.status == 413
    assert "packed 1,0" in error.message and "at most 100 times" in error.message and "TAILOR_XLSX_MAX_COMPRESSION_RATIO" in error.message
    assert seconds < 2 and peak < 20 * MiB


def test_the_total_unpacked_size_and_the_number_of_parts_are_limited(tmp_path):
    sheet = [(SHEET_START.encode() + inline_row(1, "q", "a") + inline_row(2, "x", "y") + SHEET_END.encode(), 1)]
    padding = {f"xl/media/pad{i}.bin": [(bytes(range(256)) * 1024, 1)] for i in range(4)}  # 4 x 256 KB, barely packed
    book = workbook(tmp_path / "wide.xlsx", sheet, extra=padding)
    limits = XlsxLimits.from_settings()
    assert _read_all(book, limits)[2] is None  # within the defaults it reads
    error = _read_all(book, replace(limits, max_unpacked_bytes=MiB // 2))[2]
    assert error is not None and "unpacks to 1.0 MB" in error.message and "at most 512.0 KB unpacked" in error.message
    assert "TAILOR_XLSX_MAX_UNPACKED_BYTES" in error.message
    error = _read_all(book, replace(limits, max_parts=5))[2]
    assert error is not None and "holds 10 parts" in error.message and "TAILOR_XLSX_MAX_PARTS" in error.message


def test_a_gap_to_row_100_million_stops_at_the_row_limit(client, make_user, db, tmp_path, settings, monkeypatch):
    # 80 bytes of sheet that openpyxl expands into 100,000,000 rows.
    rows = inline_row(1, "question", "answer") + inline_row(2, "Where?", "Here") + inline_row(100_000_000, "late", "row")
    book = workbook(tmp_path / "tall.xlsx", [(SHEET_START.encode() + rows + SHEET_END.encode(), 1)])
    limits = replace(XlsxLimits.from_settings(), max_rows=20_000)
    seconds, peak, error = _read_all(book, limits)
    assert error is not None and "more than 20,000 rows" in error.message and "TAILOR_XLSX_MAX_ROWS" in error.message
    assert seconds < 5 and peak < 20 * MiB
    monkeypatch.setattr(settings, "xlsx_max_rows", 20_000)
    _, _, _, token = make_user()
    before = _count(db)
    response = _upload(client, token, book)
    assert response.status_code == 413 and "Sheet 'Data' has more than 20,000 rows" in response.json()["detail"]
    assert _count(db) == before


def test_the_default_row_limit_refuses_a_sheet_past_excels_last_row(tmp_path):
    rows = inline_row(1, "question", "answer") + inline_row(2_000_000, "late", "row")
    book = workbook(tmp_path / "taller.xlsx", [(SHEET_START.encode() + rows + SHEET_END.encode(), 1)])
    seconds, _, error = _read_all(book, trace=False)  # two million empty rows, one at a time
    assert error is not None and "more than 1,048,576 rows" in error.message
    assert seconds < 10


def test_one_long_shared_string_in_every_cell_stops_at_the_text_limit(client, make_user, db, tmp_path, settings, monkeypatch):
    # A 100 KB shared string in 30,000 cells: 3 GB of CSV from a 100 KB file.
    sst = [(b'<sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><si><t>q</t></si><si><t>', 1)]
    sst += [(b"x" * 1024, 100), (b"</t></si></sst>", 1)]
    body = shared_row(1, 0, 0) + b"".join(shared_row(n, 1, 1) for n in range(2, 15_002))
    book = workbook(tmp_path / "wordy.xlsx", [(SHEET_START.encode() + body + SHEET_END.encode(), 1)], sst)
    assert book.stat().st_size < 200 * 1024
    seconds, peak, error = _read_all(book)
    assert error is not None and "more than 1.0 GB of text" in error.message and "TAILOR_XLSX_MAX_TEXT_BYTES" in error.message
    assert seconds < 10 and peak < 20 * MiB
    monkeypatch.setattr(settings, "xlsx_max_text_bytes", 5 * MiB)
    _, _, _, token = make_user()
    before = _count(db)
    response = _upload(client, token, book)
    assert response.status_code == 413 and "more than 5.0 MB of text (reached at row 27)" in response.json()["detail"]
    assert _count(db) == before


def test_a_row_wider_than_the_column_limit_is_refused(tmp_path):
    far = b'<row r="2"><c r="A2" t="inlineStr"><is><t>x</t></is></c><c r="XFD2" t="inlineStr"><is><t>far</t></is></c></row>'
    book = workbook(tmp_path / "far.xlsx", [(SHEET_START.encode() + inline_row(1, "q", "a") + far + SHEET_END.encode(), 1)])
    error = _read_all(book)[2]
    assert error is not None and "Row 2 of sheet 'Data' has cells beyond column 2,000" in error.message


def test_a_claimed_sheet_size_does_not_pad_every_row(tmp_path):
    dimension = b'<dimension ref="A1:XFD1048576"/>'
    start = SHEET_START.replace("<sheetData>", "").encode() + dimension + b"<sheetData>"
    book = workbook(tmp_path / "claims.xlsx", [(start + inline_row(1, "q", "a") + inline_row(2, "x", "y") + SHEET_END.encode(), 1)])
    table = open_table(book, "claims.xlsx")
    assert list(table.rows) == [(1, ["q", "a"]), (2, ["x", "y"])]


def _book(*sheets: tuple[str, list[list]]) -> bytes:
    book = Workbook()
    book.remove(book.active)
    for title, rows in sheets:
        sheet = book.create_sheet(title)
        for row in rows:
            sheet.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


@pytest.mark.parametrize("cover", [[], [["Quarterly export"]], [[None], [None, None]]], ids=["empty", "a-title", "blank-cells"])
def test_a_cover_sheet_is_skipped_for_the_first_sheet_with_data(client, make_user, cover):
    _, _, _, token = make_user()
    data = _book(("Cover", cover), ("Tickets", [["question", "answer"], ["Where?", "Here"]]), ("Other", [["a"], ["b"]]))
    response = client.post("/api/v1/datasets", headers=bearer(token), files={"file": ("export.xlsx", data, XLSX)})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["sheet_name"] == "Tickets" and body["columns"] == ["question", "answer"] and body["row_count"] == 1
    assert any(
        "3 sheets (Cover, Tickets, Other); 'Cover' has no data (a header and a row), so the first sheet with data, 'Tickets', was used" in n
        for n in body["notes"]
    ), body["notes"]


def test_a_workbook_without_data_anywhere_is_still_called_empty(client, make_user):
    _, _, _, token = make_user()
    data = _book(("Cover", []), ("Blank", [[None]]))
    response = client.post("/api/v1/datasets", headers=bearer(token), files={"file": ("export.xlsx", data, XLSX)})
    assert response.status_code == 422 and "The file is empty" in response.json()["detail"]


def test_an_archive_of_65535_parts_is_refused_before_its_directory_is_read(client, make_user, tmp_path):
    # The end record of a ZIP archive declaring 65,535 entries (zip64 allows billions); zipfile would build a ZipInfo per entry.
    import struct

    path = tmp_path / "many.xlsx"
    path.write_bytes(b"PK\x03\x04" + b"\x00" * 26 + struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 65535, 65535, 0, 30, 0))
    error = _read_all(path)[2]
    assert error is not None and error.status == 413 and "holds 65,535 parts" in error.message
    _, _, _, token = make_user()
    response = _upload(client, token, path, "many.csv")
    assert response.status_code == 413 and "at most 10,000 parts" in response.json()["detail"]
