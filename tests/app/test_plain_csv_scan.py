"""The compiled scanner (csv_scan) and the fast ingest path (plain_csv) give exactly what the
general reader gives: the same records as csv.reader, cell facts that match the cells' text, the
same profile, content hash and row index for every file the fast path takes, and a fallback to
the general reader (with its messages) for every file it does not."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import random
import re

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from app.services import (
    csv_cell_flags,
    csv_scan,
    dataset_ingest,
    dataset_normalise,
    dataset_store,
    plain_csv,
    profiling,
    stored_rows,
    tabular_formats,
)
from app.services.duplicate_rows import near_duplicate_key

CHARACTERS = ["a", "B", "z", " ", ",", '"', "\n", "\r", "0", "1", "7", "é", "@", "\t", "\x1c", ".", "-", "\u2003", "١", "€", "'"]


@pytest.fixture
def small_pieces(monkeypatch):
    """Buffers, halves, cell arrays and profile blocks a few bytes or rows long, so that every
    boundary (a record cut by a read, a block split between two scans, a split inside quotes) is
    met in a small file."""
    monkeypatch.setattr(csv_scan, "READ_BYTES", 32)
    monkeypatch.setattr(csv_scan, "SPLIT_AT_LEAST", 8)
    monkeypatch.setattr(csv_scan, "MAX_CELLS_AT_ONCE", 12)
    monkeypatch.setattr(profiling, "BATCH_ROWS", 4)
    monkeypatch.setattr(profiling, "TYPE_SAMPLE_ROWS", 6)


def _scanned(path, width):
    rows = []
    for cells in csv_scan.scan_file(path, width):
        for row in range(cells.rows):
            rows.append(
                [
                    (
                        cells.text(row, column),
                        int(cells.flags[row, column]),
                        int(cells.chars[row, column]),
                        int(cells.exact[row, column]),
                        int(cells.near[row, column]),
                    )
                    for column in range(width)
                ]
            )
    return rows


@hypothesis_settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.lists(st.sampled_from(CHARACTERS), min_size=1, max_size=60).map("".join))
def test_records_and_cell_facts_match_csv_reader(tmp_path, small_pieces, text):
    path = tmp_path / "any.csv"
    path.write_bytes(text.encode())
    expected = list(csv.reader(io.StringIO(text, newline=""), strict=False))
    if not expected or not expected[0]:
        return
    width = len(expected[0])
    try:
        rows = _scanned(path, width)
    except csv_scan.Unusual as unusual:
        # Only for what the general reader must see: a record of another width, a blank line,
        # a quote open at the end, or text after a closing quote.
        body = expected[1:]
        ragged = any(len(record) != width for record in body)
        assert ragged or unusual.status in (csv_cell_flags.OPEN_QUOTE, csv_cell_flags.IRREGULAR), (text, unusual.status)
        return
    assert [[cell[0] for cell in row] for row in rows] == expected[1:]
    for row in rows:
        for value, flags, chars, _, _ in row:
            assert chars == len(value)
            assert bool(flags & csv_cell_flags.EMPTY) == (value == "")
            if not flags & csv_cell_flags.NON_ASCII:
                assert bool(flags & csv_cell_flags.SPACE_ONLY) == (value == "" or value.isspace())
            assert bool(flags & csv_cell_flags.ALL_DIGITS) == (value.isascii() and value.isdigit())
            assert bool(flags & csv_cell_flags.AT_SIGN) == ("@" in value)
            assert bool(flags & csv_cell_flags.DIGIT) == bool(re.search("[0-9]", value))
            assert bool(flags & csv_cell_flags.DIGIT_PAIR) == bool(re.search("[0-9][0-9]", value))
            assert bool(flags & csv_cell_flags.FIRST_ZERO) == value.startswith("0")


def test_equal_texts_and_only_equal_texts_share_a_hash(tmp_path):
    """Over many cells: the text hash tells texts apart and the near hash tells near-duplicate
    keys apart, whatever the quoting."""
    rng = random.Random(11)
    words = ["Order", "order", "ORDER!", "or der", "refund", "Refund.", '"quoted"', "a,b", "é", "", " ", "42", "4 2", "x" * 40, "x" * 41]
    rows = [[" ".join(rng.choices(words, k=rng.randint(0, 3))) for _ in range(3)] for _ in range(3000)]
    path = tmp_path / "words.csv"
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, quoting=csv.QUOTE_MINIMAL)
        writer.writerow(["a", "b", "c"])
        for row in rows:
            writer.writerow(row if row != ["", "", ""] else ["x", "", ""])
    by_text: dict[int, str] = {}
    by_key: dict[int, bytes] = {}
    texts: dict[str, int] = {}
    for row in _scanned(path, 3):
        for value, _, _, exact, near in row:
            assert by_text.setdefault(exact, value) == value
            assert texts.setdefault(value, exact) == exact
            assert by_key.setdefault(near, near_duplicate_key(value)) == near_duplicate_key(value)
    assert len(by_text) > 100 and len(set(by_key.values())) < len(by_text)  # near keys do merge texts


def _general_report(path, tmp_path):
    return dataset_normalise.write_normalised(
        tabular_formats.open_table(path, path.name), tmp_path / "out.csv", work_dir=tmp_path, source=path
    )


def _assert_same_as_general(path, tmp_path, may_decline: bool = False):
    fast = dataset_ingest.ingest_plain_csv(path, path.name, tmp_path)
    if fast is None and may_decline:
        # Declined only where the general reader does something the fast path does not: refuses
        # the file, sniffs another delimiter, or rewrites it (a cleaned header, a skipped record).
        try:
            general = _general_report(path, tmp_path)
        except dataset_store.DatasetError:
            return None
        assert general.delimiter != "," or general.renamed_headers or general.row_index, path.read_text()
        return None
    assert fast is not None, "the fast path declined a plain CSV"
    report, sha256 = fast
    general = _general_report(path, tmp_path)
    assert report.profile == general.profile
    assert (report.columns, report.row_count, report.notes) == (general.columns, general.row_count, general.notes)
    assert sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert report.row_index == stored_rows.build_row_index(path)
    return report


cell_text = st.lists(
    st.sampled_from(CHARACTERS + ["x", "Q", "2024-01-05", "a@b.co", "+44 20 7946 0000", "4111111111111111", "yes"]), max_size=6
).map("".join)


@hypothesis_settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(width=st.integers(1, 4), data=st.data())
def test_the_fast_profile_equals_the_general_one(tmp_path, small_pieces, width, data):
    rows = data.draw(st.lists(st.lists(cell_text, min_size=width, max_size=width), min_size=1, max_size=40))
    rows = [row for row in rows if "".join(row).strip()]  # blank records go to the general reader: tested below
    if not rows:
        return
    path = tmp_path / "table.csv"
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([f"column {i}" for i in range(width)])
        writer.writerows(rows)
    _assert_same_as_general(path, tmp_path, may_decline=True)


def test_a_support_export_profiles_the_same_both_ways(tmp_path, monkeypatch):
    """Real block sizes: 45,000 rows cross the type-vote sample and many blocks, with personal
    data, dates, a digits column, long cells, quotes and non-ASCII text; small reads split blocks."""
    monkeypatch.setattr(csv_scan, "READ_BYTES", 256 * 1024)
    monkeypatch.setattr(csv_scan, "SPLIT_AT_LEAST", 16 * 1024)
    rng = random.Random(3)
    path = tmp_path / "export.csv"
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\r\n")
        writer.writerow(["id", "phone", "when", "text", "flag", "amount", "Name"])
        written = []
        for i in range(45_000):
            if i % 1000 == 999:  # an exact and a near duplicate of earlier rows
                writer.writerow(written[i - 500])
                writer.writerow([cell.upper() + "!" for cell in written[i - 600]])
            written.append(
                [
                    str(i % 40_000),
                    rng.choice(
                        [
                            "",
                            f"0207946{rng.randint(1000, 9999)}",
                            f"+44 20 7946 {rng.randint(0, 9999):04d}",
                            "4111111111111111",
                            str(rng.randint(0, 10**6)),
                        ]
                    ),
                    rng.choice([f"2024-01-{rng.randint(1, 28):02d}", "", "1/2/2024"]) if i > 300 else "2024-01-01",
                    rng.choice(
                        [
                            "Hello, World",
                            "hello world!",
                            "Résumé café ١٢ 12",
                            "mail me: a.b@example.com",
                            '"quoted", text',
                            "  ",
                            "\u2003",
                            "line\nbreak",
                            "IBAN GB82 WEST 1234 5698 7654 32",
                            "x" * rng.randint(1, 300),
                        ]
                    ),
                    rng.choice(["yes", "no", "1", "0", "true"]),
                    rng.choice(["12.5", "-3", "1e5", "42%", "١٢٣", "007"]),
                    rng.choice(["Ann", "Bob", "Çelik", "=SUM(A1)", ""]),
                ]
            )
            writer.writerow(written[-1])
    report = _assert_same_as_general(path, tmp_path)
    assert report.profile["personal_data_total"] > 1000
    assert report.profile["duplicates"]["exact"] >= 44 and report.profile["duplicates"]["near"] >= 30


@pytest.mark.parametrize(
    "tail, reason",
    [
        (b"\n", "a blank line"),
        (b" , \n", "a blank record"),
        (b"1,2,3\n", "a ragged record"),
        (b'"open,2\n', "a quote open at the end"),
        (b'"a"b,2\n', "text after a closing quote"),
        (b"caf\xe9,2\n", "Windows-1252 text after the sniffed part"),
        (b"nul\x00,2\n", "a NUL byte after the sniffed part"),
    ],
)
def test_files_needing_the_general_reader_get_its_answer(tmp_path, tail, reason):
    """Past the first 64 KB (what the header checks see), each problem sends the file to the
    general reader, so the dataset or the message is the one it gives."""
    body = b"question,answer\n" + b"where is my order,it shipped\n" * 4000
    path = tmp_path / "late.csv"
    path.write_bytes(body + tail + b"thanks,bye\n")
    assert dataset_ingest.ingest_plain_csv(path, path.name, tmp_path) is None, reason


def test_headers_that_need_cleaning_and_other_formats_go_to_the_general_reader(tmp_path):
    cases = {
        "renamed.csv": b"question,question\na,b\n",
        "blank_name.csv": b"question,\na,b\n",
        "semicolons.csv": b"question;answer\na;b\nc;d\n",
        "bom.csv": b"\xef\xbb\xbfquestion,answer\na,b\n",
        "rows.jsonl": b'{"question": "a"}\n',
        "multiline_header.csv": b'"ques\ntion",answer\na,b\n',
    }
    for name, content in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        assert dataset_ingest.ingest_plain_csv(path, name, tmp_path) is None, name


def test_an_upload_through_the_fast_path_is_stored_like_any_other(tmp_path, db, monkeypatch):
    """The plain CSV is taken by the fast path, in its child process (the general writer is never
    called), stored as uploaded, with its row index, its hash, and recognised when uploaded again."""
    from app.services.accounts import create_user
    from app.services.artifacts import LocalArtifactStore

    def refuse(*args, **kwargs):
        raise AssertionError("the general reader was used")

    monkeypatch.setattr(dataset_ingest, "write_normalised", refuse)
    monkeypatch.setattr(dataset_ingest, "PLAIN_CSV_MIN_BYTES", 0)  # small as it is, through the child process
    content = b"question,answer\n" + b"".join(b'question %d,"answer, with comma %d"\n' % (i, i) for i in range(2500))
    store = LocalArtifactStore(tmp_path / "store")
    user = create_user(db, "fast@example.com", "correct horse battery")
    dataset, report = dataset_ingest.ingest_upload(
        db, store, workspace_id=user.workspace_id, user_id=user.id, filename="plain.csv", source=io.BytesIO(content), limit_bytes=10**7
    )
    assert report is not None and dataset.row_count == 2500 and dataset.columns == ["question", "answer"]
    assert dataset.sha256 == hashlib.sha256(content).hexdigest()
    assert store.path(dataset.storage_key).read_bytes() == content
    assert json.loads(store.path(dataset_store.dataset_key(dataset.id, dataset_store.ROW_INDEX_NAME)).read_text()) == [
        content.index(b"question 0,"),
        content.index(b"question 1000,"),
        content.index(b"question 2000,"),
    ]
    page = stored_rows.page_rows(store, dataset, page=81, page_size=25)  # rows 2001-2025, found through the index
    assert (
        page.rows[0][0] == 2001
        and page.rows[0][1]["question"] == "question 2000"
        and page.rows[0][1]["answer"] == "answer, with comma 2000"
    )
    again, again_report = dataset_ingest.ingest_upload(
        db, store, workspace_id=user.workspace_id, user_id=user.id, filename="again.csv", source=io.BytesIO(content), limit_bytes=10**7
    )
    assert again.id == dataset.id and again_report is None
    assert [p.name for p in (tmp_path / "store" / ".tmp").iterdir()] == []


def test_a_failing_child_process_leaves_the_file_to_the_general_reader(tmp_path, monkeypatch):
    """If the scanner's process cannot run (here: a Python that exits at once), the upload is
    still read, by the general reader, with the same result."""
    path = tmp_path / "plain.csv"
    path.write_bytes(b"question,answer\nwhere,here\n")
    monkeypatch.setattr(plain_csv.sys, "executable", "/bin/false")
    assert dataset_ingest.ingest_plain_csv(path, path.name, tmp_path, scanner=plain_csv.ScannerProcess()) is None
    monkeypatch.undo()
    scanner = plain_csv.ScannerProcess()
    report, sha256 = dataset_ingest.ingest_plain_csv(path, path.name, tmp_path, scanner=scanner)
    assert report.row_count == 1 and report.profile == _general_report(path, tmp_path).profile
    assert scanner.process.returncode == 0


def test_an_unused_scanner_process_is_ended(tmp_path):
    """A scanner started for a large upload that turns out not to be a plain CSV is stopped."""
    scanner = plain_csv.ScannerProcess()
    scanner.close()
    assert scanner.process.returncode is not None


def test_an_upload_already_on_disk_starts_its_own_scanner(tmp_path, db, monkeypatch):
    """ingest_received without a scanner started beforehand starts one, and ends it."""
    from app.services.accounts import create_user
    from app.services.artifacts import LocalArtifactStore

    started = []
    real = plain_csv.ScannerProcess

    def counted():
        started.append(real())
        return started[-1]

    monkeypatch.setattr(dataset_ingest, "PLAIN_CSV_MIN_BYTES", 0)
    monkeypatch.setattr(dataset_ingest, "ScannerProcess", counted)
    store = LocalArtifactStore(tmp_path / "store")
    user = create_user(db, "own-scanner@example.com", "correct horse battery")
    raw = store.temp_path(".upload")
    raw.write_bytes(b"question,answer\nwhere,here\nwhen,now\n")
    dataset, report = dataset_ingest.ingest_received(db, store, raw, workspace_id=user.workspace_id, user_id=user.id, filename="own.csv")
    assert report is not None and dataset.row_count == 2 and len(started) == 1
    assert started[0].process.returncode == 0
