"""Datasets: stream an upload to disk, read it (CSV in any common encoding and delimiter, .xlsx,
.jsonl), normalise it to a UTF-8 CSV in the artifact store while profiling it in the same pass,
and read rows back for previews, searches and training."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import random
import shutil
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import Dataset, Job
from app.services import pii
from app.services.artifacts import LocalArtifactStore
from app.services.plain_csv import ROW_INDEX_EVERY, ScannerProcess, plain_header, scan_plain_csv
from app.services.profiling import ProfileBuilder, near_duplicate_key, personal_data_cells
from app.services.tabular_formats import (
    DELIMITER_NAMES, MAX_CELL_CHARS, MAX_COLUMNS, SNIFF_BYTES, Table, TableError, detect_delimiter, detect_encoding,
    neutralise_formula, open_table, read_csv,
)

CHUNK = 1024 * 1024
NORMALISED_NAME = "rows.csv"
TRAINING_COPY_NAME = "training.csv"  # personal data masked; exists only while dataset.pii_masked
ROW_INDEX_NAME = "row_index.json"
ROWS_AT_ONCE = 1024  # records taken from a reader at a time; a batch without anything to fix skips the per-record checks
MAX_NOTED_ROWS = 1000
PAGE_SIZE = 25
# Smaller uploads are read by the general reader in the web process; from this size on the compiled
# scanner in a child process is quicker, despite the second or so the child needs to start.
PLAIN_CSV_MIN_BYTES = 16 * 1024 * 1024

__all__ = ["DELIMITERS", "DELIMITER_NAMES", "MAX_CELL_CHARS", "MAX_COLUMNS", "SNIFF_BYTES", "detect_delimiter", "detect_encoding"]
DELIMITERS = ",;\t|"

# Kept as the service's own name: a TableError from the readers is a DatasetError.
DatasetError = TableError


@dataclass
class IngestReport:
    encoding: str
    delimiter: str
    columns: list[str]
    row_count: int
    ragged_rows: list[int] = field(default_factory=list)
    renamed_headers: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    profile: dict[str, Any] = field(default_factory=dict)
    format: str = "csv"
    sheet: str | None = None
    row_word: str = "line"
    row_index: list[int] = field(default_factory=list)


def upload_too_large_message(limit_bytes: int) -> str:
    return (f"The file is larger than the upload limit of {format_bytes(limit_bytes)}. "
            "Split it or ask your administrator to raise TAILOR_MAX_UPLOAD_BYTES.")


def format_bytes(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def clean_headers(raw: list[str]) -> tuple[list[str], list[str]]:
    """Strip names, name empty ones column_N and suffix duplicates; returns (names, notes)."""
    names: list[str] = []
    notes: list[str] = []
    seen: dict[str, int] = {}
    taken = {name.strip() for name in raw}
    for index, name in enumerate(raw, start=1):
        clean = " ".join(name.replace("\ufeff", "").split())[:200]
        if not clean:
            clean = f"column_{index}"
            while clean in taken:
                clean += "_"
            notes.append(f"Column {index} had no name; it is called {clean}.")
        if clean in seen:
            seen[clean] += 1
            renamed = f"{clean}_{seen[clean]}"
            while renamed in taken or renamed in seen:
                seen[clean] += 1
                renamed = f"{clean}_{seen[clean]}"
            notes.append(f"Column {index} repeats the name {clean!r}; it is called {renamed}.")
            clean = renamed
        seen.setdefault(clean, 1)
        names.append(clean)
    return names, notes


def _is_blank(record: list[str]) -> bool:
    if record and record[0] and not record[0].isspace():
        return False
    return not "".join(record).strip()


def write_normalised(table: Table, target: Path, work_dir: Path | None = None, source: Path | None = None) -> IngestReport:
    """Write the table as a UTF-8, comma-delimited CSV with clean headers, profiling every row.

    When source is given and already is such a CSV (the common case for large exports), nothing
    is rewritten: target becomes a link to (or copy of) source. The first record that needs a fix
    switches to writing, replaying the records before it from source."""
    word = table.row_word
    rows_iter = table.rows
    header: list[str] | None = None
    header_at = 0
    for number, record in rows_iter:
        if not _is_blank(record):
            header, header_at = record, number
            break
    if header is None:
        raise DatasetError("The file is empty. Upload a CSV with a header row and at least one data row.")
    if len(header) > MAX_COLUMNS:
        raise DatasetError(f"The header ({word} {header_at:,}) has {len(header):,} columns; Tailor reads at most {MAX_COLUMNS:,}. "
                           "Keep only the columns you need and upload again.")
    columns, renamed = clean_headers(header)
    width = len(columns)
    ragged: list[int] = []
    ragged_total = 0
    rows = 0
    row_index: list[int] = []
    profile = ProfileBuilder(columns, work_dir)
    last: tuple[int, list[str]] | None = None
    copy_through = (source is not None and table.format == "csv" and table.encoding == "utf-8" and table.delimiter == ","
                    and header_at == 1 and columns == header and _has_newlines(source))
    out = writer = None

    def start_writing() -> None:
        nonlocal out, writer
        out = open(target, "w", encoding="utf-8", newline="")
        writer = csv.writer(out)
        writer.writerow(columns)
        if copy_through:  # replay the records that were fine as they were
            replay = read_csv(source).rows
            next(replay)
            for count, (_, earlier) in enumerate(replay):
                if count == rows:
                    break
                if count % ROW_INDEX_EVERY == 0:
                    row_index.append(out.tell())
                writer.writerow(earlier)

    def take_record(number: int, record: list[str]) -> None:
        """One record, checked on its own: blank, ragged, or to be written as it is."""
        nonlocal rows, last, ragged_total
        if _is_blank(record):
            if writer is None:
                start_writing()
            return
        if len(record) != width:
            if writer is None:
                start_writing()
            if len(record) > width and not "".join(record[width:]).strip():
                record = record[:width]  # trailing empty cells, as spreadsheets export them
            else:
                _check_runaway_quote(record, number, word, columns)
                ragged_total += 1
                if len(ragged) < MAX_NOTED_ROWS:
                    ragged.append(number)
                record = (record + [""] * width)[:width]
        if writer is not None:
            if rows % ROW_INDEX_EVERY == 0:
                row_index.append(out.tell())
            writer.writerow(record)
        rows += 1
        profile.add(rows, record)
        last = (number, record)

    try:
        if not copy_through:
            start_writing()
        while True:
            chunk, failure = _next_records(rows_iter, ROWS_AT_ONCE)
            if failure is not None:  # the records read before the failure are checked first, as one by one
                for number, record in chunk:
                    take_record(number, record)
                raise failure
            if not chunk:
                break
            records = [record for _, record in chunk]
            if _plain_records(records, width):  # the common case, without a check per record
                if writer is not None:
                    _write_indexed(writer, out, records, rows, row_index)
                profile.add_rows(rows + 1, records)
                rows += len(records)
                last = chunk[-1]
                continue
            for number, record in chunk:
                take_record(number, record)
        if last is not None:
            _check_unclosed_quote_at_end(last[1], last[0], word, columns)
        if rows == 0:
            raise DatasetError("The file has a header row but no data rows. Add at least one row of data.")
        if out is not None:
            out.close()
        else:
            _link_or_copy(source, target)
        result = profile.finish()
    finally:
        if out is not None and not out.closed:
            out.close()
        profile.close()
    notes = list(table.notes)
    if ragged_total:
        shown = ", ".join(f"{n:,}" for n in ragged[:10])
        more = f" and {ragged_total - 10:,} more" if ragged_total > 10 else ""
        notes.append(f"{ragged_total:,} row(s) had a different number of cells than the header's {width} ({word}s {shown}{more}); "
                     "missing cells were left empty and extra cells dropped.")
    return IngestReport(encoding=table.encoding, delimiter=table.delimiter, columns=columns, row_count=rows, ragged_rows=ragged,
                        renamed_headers=renamed, notes=notes, profile=result, format=table.format, sheet=table.sheet,
                        row_word=word, row_index=row_index if out is not None else [])


def _next_records(rows: Iterator, count: int) -> tuple[list, Exception | None]:
    """Up to count records from a reader, and the error that stopped it early, if one did."""
    chunk = []
    try:
        for item in rows:
            chunk.append(item)
            if len(chunk) == count:
                break
    except Exception as exc:  # noqa: BLE001 - raised again by the caller after the records before it
        return chunk, exc
    return chunk, None


def _plain_records(records: list[list[str]], width: int) -> bool:
    """Every record has width cells and a first cell that is not blank: nothing to fix in any."""
    if set(map(len, records)) != {width}:
        return False
    firsts = [record[0] for record in records]
    return "" not in firsts and not any(map(str.isspace, firsts))


def _write_indexed(writer, out, records: list[list[str]], written: int, row_index: list[int]) -> None:
    """Write records after `written` others, noting the offset of every ROW_INDEX_EVERY-th."""
    position = 0
    while position < len(records):
        if (written + position) % ROW_INDEX_EVERY == 0:
            row_index.append(out.tell())
        step = ROW_INDEX_EVERY - (written + position) % ROW_INDEX_EVERY
        writer.writerows(records[position:position + step])
        position += step


def _has_newlines(path: Path) -> bool:
    """Line feeds end its lines (not a lone carriage return), so the row index can find records."""
    with open(path, "rb") as f:
        return b"\n" in f.read(SNIFF_BYTES)


def _link_or_copy(source: Path, target: Path) -> None:
    """Stored files are never changed in place, so a hard link is as good as a copy, and free."""
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def build_row_index(path: Path) -> list[int]:
    """Byte offsets of every ROW_INDEX_EVERY-th record of a stored CSV (quotes spanning lines followed)."""
    offsets: list[int] = []
    position = 0
    record = -1  # the header is record -1
    inside_quotes = False
    with open(path, "rb") as f:
        for line in f:
            if not inside_quotes:
                if record >= 0 and record % ROW_INDEX_EVERY == 0:
                    offsets.append(position)
                record += 1
            if line.count(b'"') % 2:
                inside_quotes = not inside_quotes
            position += len(line)
    return offsets


def _check_runaway_quote(record: list[str], number: int, word: str, columns: list[str]) -> None:
    """A ragged record with a line break inside a cell is almost always a quote left open."""
    for index, cell in enumerate(record):
        if "\n" in cell or "\r" in cell:
            column = columns[index] if index < len(columns) else f"cell {index + 1}"
            raise DatasetError(f"A quote opened in {word} {number:,}, column {column!r}, is not closed where the cell should end, "
                               f"so the following lines ran into it. Check the quotes around {word} {number:,} "
                               "(a text containing a quote must double it: \"\").")


def _check_unclosed_quote_at_end(record: list[str], number: int, word: str, columns: list[str]) -> None:
    """A quote left open in the last record swallows the rest of the file, ending in a line break."""
    for index, cell in enumerate(record):
        if cell.endswith(("\n", "\r")) and ("\n" in cell[:-1] or len(cell) > 1):
            raise DatasetError(f"A quote opened in {word} {number:,}, column {columns[index]!r}, is never closed, so everything "
                               "after it ran into one cell. Close the quote (a text containing a quote must double it: \"\").")


def normalise_csv(source: Path, target: Path) -> IngestReport:
    """Read any supported CSV and write it as UTF-8, comma-delimited, with clean headers."""
    return write_normalised(open_table(source, source.name if source.suffix else "upload.csv"), target, source=source)


def dataset_key(dataset_id: int, name: str = NORMALISED_NAME) -> str:
    return f"datasets/{dataset_id}/{name}"


def ingest_upload(db: Session, store: LocalArtifactStore, *, workspace_id: int, user_id: int | None,
                  filename: str, source: BinaryIO, limit_bytes: int, sheet: str | None = None) -> tuple[Dataset, IngestReport | None]:
    """Store an uploaded file (CSV, .xlsx or .jsonl) as a dataset. Returns (dataset, report); report
    is None when the same file (and sheet) was already uploaded to this workspace: the existing
    dataset is returned. On any error nothing is left behind: no row, no file."""
    raw = store.temp_path(".upload")
    # A large CSV will likely go to the compiled scanner: its process starts while the upload is copied.
    size = _size_of(source)
    scanner = ScannerProcess() if size is not None and size >= PLAIN_CSV_MIN_BYTES and _may_be_csv(filename) else None
    try:
        receive_upload(source, raw, limit_bytes)
        return ingest_received(db, store, raw, workspace_id=workspace_id, user_id=user_id, filename=filename, sheet=sheet,
                               scanner=scanner)
    finally:
        raw.unlink(missing_ok=True)
        if scanner is not None:
            scanner.close()


def _size_of(source: BinaryIO) -> int | None:
    """The bytes left in a seekable upload (a spooled temporary file), else None."""
    try:
        here = source.tell()
        end = source.seek(0, os.SEEK_END)
        source.seek(here)
        return end - here
    except (AttributeError, OSError, ValueError):
        return None


def _may_be_csv(filename: str) -> bool:
    return Path(filename or "").suffix.lower() not in (".xlsx", ".xls", ".jsonl", ".ndjson")


def receive_upload(source: BinaryIO, target: Path, limit_bytes: int) -> int:
    """Copy an upload to target in chunks, enforcing the size limit; returns its size."""
    size = 0
    with open(target, "wb") as out:
        while chunk := source.read(CHUNK):
            size += len(chunk)
            if size > limit_bytes:
                raise DatasetError(upload_too_large_message(limit_bytes), status=413)
            out.write(chunk)
    return size


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def ingest_received(db: Session, store: LocalArtifactStore, raw: Path, *, workspace_id: int, user_id: int | None,
                    filename: str, sheet: str | None = None, scanner: ScannerProcess | None = None) -> tuple[Dataset, IngestReport | None]:
    """ingest_upload for an upload already written to raw (a temporary path of the store, which
    this moves into place or removes). A large plain CSV is scanned in a child process (scanner,
    when one was started already)."""
    filename = Path(filename or "upload.csv").name[:300] or "upload.csv"
    sheet = (sheet or "").strip() or None
    normalised = store.temp_path(".csv")
    try:
        size = raw.stat().st_size
        if size == 0:
            raise DatasetError("The file is empty. Upload a CSV with a header row and at least one data row.")
        plain = None
        if size >= PLAIN_CSV_MIN_BYTES:
            with nullcontext(scanner) if scanner is not None else ScannerProcess() as child:  # the caller ends its own
                plain = ingest_plain_csv(raw, filename, work_dir=raw.parent, scanner=child)
        if plain is not None:
            report, sha256 = plain
            table_sheet = None
        else:
            sha256 = file_sha256(raw)
            table = open_table(raw, filename, sheet)
            table_sheet = table.sheet
        existing = db.scalar(select(Dataset).where(Dataset.workspace_id == workspace_id, Dataset.sha256 == sha256,
                                                   Dataset.sheet_name.is_(None) if table_sheet is None else Dataset.sheet_name == table_sheet))
        if existing is not None:
            return existing, None
        if plain is not None:
            _link_or_copy(raw, normalised)
        else:
            report = write_normalised(table, normalised, work_dir=raw.parent, source=raw)
        name = Path(filename).stem[:250] or "dataset"
        if report.sheet and len(report.profile.get("columns", [])) and report.format == "xlsx":
            name = f"{name} ({report.sheet})"[:300]
        dataset = Dataset(
            workspace_id=workspace_id, created_by_id=user_id, name=name,
            original_filename=filename, sha256=sha256, size_bytes=size, row_count=report.row_count,
            columns=report.columns, encoding=report.encoding, delimiter=report.delimiter, storage_key="",
            source_format=report.format, sheet_name=report.sheet, profile=report.profile,
            ingest_notes=report.renamed_headers + report.notes,
        )
        db.add(dataset)
        db.flush()
        dataset.storage_key = dataset_key(dataset.id)
        index_file = store.temp_path(".json")
        try:
            if report.row_index:
                index_file.write_text(json.dumps(report.row_index))
                store.put_file(dataset_key(dataset.id, ROW_INDEX_NAME), index_file)
            store.put_file(dataset.storage_key, normalised)
            store.put_file(dataset_key(dataset.id, "original" + (Path(filename).suffix[:10].lower() or ".csv")), raw)
            db.flush()
        except BaseException:
            index_file.unlink(missing_ok=True)
            store.delete(f"datasets/{dataset.id}")
            raise
        return dataset, report
    finally:
        for leftover in (raw, normalised):
            leftover.unlink(missing_ok=True)


def ingest_plain_csv(raw: Path, filename: str, work_dir: Path | None = None, *,
                     scanner: ScannerProcess | None = None) -> tuple[IngestReport, str] | None:
    """(report, sha256) for a UTF-8, comma-delimited CSV with a clean header and nothing to fix,
    from one compiled pass (plain_csv), in the scanner's child process when one is given; None
    for any other file, which write_normalised reads."""
    header = plain_header(raw, filename)
    if header is None or _is_blank(header) or len(header) > MAX_COLUMNS or clean_headers(header)[0] != header:
        return None
    scanned = scanner.scan(raw, header, work_dir) if scanner is not None else scan_plain_csv(raw, header, work_dir)
    if scanned is None or scanned.rows == 0:
        return None
    try:
        _check_unclosed_quote_at_end(scanned.last_row, 0, "line", header)
    except DatasetError:
        return None  # the general reader reports it, with its line number
    report = IngestReport(encoding="utf-8", delimiter=",", columns=header, row_count=scanned.rows, profile=scanned.profile,
                          format="csv", row_word="line", row_index=scanned.row_index)
    return report, scanned.sha256


def iter_rows(store: LocalArtifactStore, dataset: Dataset) -> Iterator[dict[str, str]]:
    """The stored rows exactly as uploaded (normalised to UTF-8 CSV)."""
    with open(store.path(dataset.storage_key), encoding="utf-8", newline="") as f:
        yield from csv.DictReader(f)


def training_key(dataset: Dataset) -> str:
    """The copy that training reads: the masked one while personal data masking is on."""
    return dataset_key(dataset.id, TRAINING_COPY_NAME) if dataset.pii_masked else dataset.storage_key


def iter_training_rows(store: LocalArtifactStore, dataset: Dataset) -> Iterator[dict[str, str]]:
    with open(store.path(training_key(dataset)), encoding="utf-8", newline="") as f:
        yield from csv.DictReader(f)


def display_row(row: dict[str, str]) -> dict[str, str]:
    """A row as shown to people or exported: formula-like cells made inert for spreadsheets."""
    return {key: neutralise_formula(value or "") for key, value in row.items()}


def preview_rows(store: LocalArtifactStore, dataset: Dataset, limit: int) -> list[dict[str, str]]:
    rows = []
    for row in iter_rows(store, dataset):
        rows.append(display_row(row))
        if len(rows) >= limit:
            break
    return rows


@dataclass
class RowPage:
    rows: list[tuple[int, dict[str, str]]]  # (row number in the dataset, 1-based; cells made inert)
    page: int
    page_size: int
    query: str
    has_next: bool
    total: int | None  # rows (or matches) in all; None when a search stopped early


def _row_index(store: LocalArtifactStore, dataset: Dataset) -> list[int]:
    """The row index written at upload, or built now (once) for a file stored as uploaded."""
    key = dataset_key(dataset.id, ROW_INDEX_NAME)
    try:
        index = json.loads(store.path(key).read_text())
    except (OSError, ValueError):
        index = []
    if index or dataset.row_count <= ROW_INDEX_EVERY:
        return index
    index = build_row_index(store.path(dataset.storage_key))
    tmp = store.temp_path(".json")
    tmp.write_text(json.dumps(index))
    store.put_file(key, tmp)
    return index


def _rows_from(store: LocalArtifactStore, dataset: Dataset, first_row: int) -> Iterator[tuple[int, list[str]]]:
    """(row number, cells) from first_row on (1-based), jumping close to it with the row index."""
    index = _row_index(store, dataset)
    checkpoint = min((first_row - 1) // ROW_INDEX_EVERY, len(index) - 1) if index else -1
    with open(store.path(dataset.storage_key), "rb") as raw:
        number = 0
        if checkpoint >= 0:
            raw.seek(index[checkpoint])
            number = checkpoint * ROW_INDEX_EVERY
        reader = csv.reader(io.TextIOWrapper(raw, encoding="utf-8", newline=""))
        if checkpoint < 0:
            next(reader, None)  # the header
        for cells in reader:
            number += 1
            if number >= first_row:
                yield number, cells


def page_rows(store: LocalArtifactStore, dataset: Dataset, page: int = 1, query: str = "", page_size: int = PAGE_SIZE) -> RowPage:
    """One page of rows, optionally only those containing query (case-insensitive, any column)."""
    page = max(1, page)
    query = query.strip()
    columns = dataset.columns
    found: list[tuple[int, dict[str, str]]] = []
    if not query:
        first = (page - 1) * page_size + 1
        for number, cells in _rows_from(store, dataset, first):
            if len(found) == page_size:
                break
            found.append((number, display_row(dict(zip(columns, cells)))))
        return RowPage(found, page, page_size, "", first + page_size - 1 < dataset.row_count, dataset.row_count)
    needle = query.casefold()
    skip = (page - 1) * page_size
    matches = 0
    has_next = False
    for number, cells in _rows_from(store, dataset, 1):
        if needle not in "\x1f".join(cells).casefold():
            continue
        matches += 1
        if matches <= skip:
            continue
        if len(found) == page_size:
            has_next = True
            break
        found.append((number, display_row(dict(zip(columns, cells)))))
    return RowPage(found, page, page_size, query, has_next, None if has_next else matches)


def export_csv_lines(store: LocalArtifactStore, dataset: Dataset, training_copy: bool = False) -> Iterator[str]:
    """The dataset as CSV text for download, formula-like cells made inert."""
    key = training_key(dataset) if training_copy else dataset.storage_key
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    with open(store.path(key), encoding="utf-8", newline="") as f:
        for number, cells in enumerate(csv.reader(f)):
            writer.writerow(cells if number == 0 else [neutralise_formula(c) for c in cells])
            if buffer.tell() > 256 * 1024:
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
    yield buffer.getvalue()


# ---------------------------------------------------------------- personal data: the masked training copy

def mask_rows(rows: list[list[str]], width: int, totals: dict[str, int]) -> list[list[str]]:
    """The rows with personal data masked, adding the counts per kind to totals. Only the cells
    that may hold any are looked at, found a column at a time (profiling.personal_data_cells)."""
    rows = [list(cells) for cells in rows]
    if all(len(cells) == width for cells in rows):
        found = [(r, i) for i, column in enumerate(zip(*rows)) for r in personal_data_cells(column, list(map(len, column)))]
    else:  # not the shape of a stored dataset: cell by cell
        found = [(r, i) for r, cells in enumerate(rows) for i, cell in enumerate(cells) if pii.may_hold_personal_data(cell)]
    for r, i in found:
        rows[r][i], counts = pii.mask_personal_data(rows[r][i])
        for kind, n in counts.items():
            totals[kind] = totals.get(kind, 0) + n
    return rows


def set_pii_masking(db: Session, store: LocalArtifactStore, dataset: Dataset, on: bool) -> dict[str, int]:
    """Write (on) or remove (off) the training copy with personal data replaced by [EMAIL],
    [PHONE], ...; the original stays unchanged. Returns the counts masked per kind."""
    if not on:
        store.delete(dataset_key(dataset.id, TRAINING_COPY_NAME))
        dataset.pii_masked = False
        db.flush()
        return {}
    totals: dict[str, int] = {}
    target = store.temp_path(".csv")
    try:
        with open(store.path(dataset.storage_key), encoding="utf-8", newline="") as f, \
                open(target, "w", encoding="utf-8", newline="") as out:
            reader = csv.reader(f)
            writer = csv.writer(out)
            header = next(reader)
            writer.writerow(header)
            while rows := [cells for _, cells in zip(range(ROWS_AT_ONCE), reader)]:
                writer.writerows(mask_rows(rows, len(header), totals))
        store.put_file(dataset_key(dataset.id, TRAINING_COPY_NAME), target)
    finally:
        target.unlink(missing_ok=True)
    dataset.pii_masked = True
    db.flush()
    return totals


# ---------------------------------------------------------------- mapping a task: guesses and checks

TEXT_WORDS = ("text", "body", "content", "description", "copy", "article", "document", "message", "review", "comment", "post")
LABEL_WORDS = ("label", "category", "class", "intent", "sentiment", "tag", "topic", "type", "priority", "team", "queue")
SYSTEM_WORDS = ("system", "persona", "instructions")
CONTEXT_WORDS = ("context", "background", "knowledge", "history", "source")


def guess_instruction_columns(columns: list[str]) -> dict[str, str | None]:
    """Guess which columns hold the prompt and the response from their names."""
    prompt_words = ("prompt", "question", "instruction", "input", "query", "customer", "message")
    response_words = ("response", "answer", "output", "completion", "reply", "agent", "target")

    def find(words: tuple[str, ...], exclude: str | None) -> str | None:
        for word in words:
            for column in columns:
                if column != exclude and word in column.lower():
                    return column
        return None

    prompt = find(prompt_words, None) or (columns[0] if columns else None)
    response = find(response_words, prompt) or next((c for c in columns if c != prompt), None)
    return {"prompt": prompt, "response": response}


def _column_stats(columns: list[str], sample_rows: list[dict[str, str]]) -> dict[str, dict[str, float]]:
    stats = {}
    for column in columns:
        values = [(row.get(column) or "").strip() for row in sample_rows]
        filled = [v for v in values if v]
        stats[column] = {
            "mean_chars": sum(map(len, filled)) / len(filled) if filled else 0.0,
            "distinct": len(set(filled)),
            "filled": len(filled),
            "questions": sum(v.endswith("?") or "?" in v[-40:] for v in filled) / len(filled) if filled else 0.0,
            "numeric": sum(v.replace(".", "", 1).lstrip("+-").isdigit() for v in filled) / len(filled) if filled else 0.0,
        }
    return stats


def _named(columns: list[str], words: tuple[str, ...], exclude: set[str]) -> str | None:
    for word in words:
        for column in columns:
            if column not in exclude and word in column.lower():
                return column
    return None


def guess_columns(task: str, columns: list[str], sample_rows: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """Guess the column of each role from names and content.

    instruction -> {"prompt", "response", "system", "context"}; text -> {"text_columns": [...]};
    classification -> {"text", "label"}. Roles that fit no column are None (or an empty list).
    """
    sample_rows = sample_rows or []
    stats = _column_stats(columns, sample_rows)
    texty = [c for c in columns if stats[c]["filled"] and stats[c]["numeric"] < 0.5] if sample_rows else list(columns)
    by_length = sorted(texty, key=lambda c: -stats[c]["mean_chars"])
    if task == "instruction":
        named = guess_instruction_columns(columns)
        prompt, response = named["prompt"], named["response"]
        words_found = _named(columns, ("prompt", "question", "instruction", "input", "query", "customer", "message"), set())
        if sample_rows and words_found is None and len(by_length) >= 2:
            # No telling names: the prompt asks (question marks), the response is the longer text.
            prompt = max(by_length, key=lambda c: (stats[c]["questions"], -stats[c]["mean_chars"]))
            response = next((c for c in by_length if c != prompt), response)
        used = {prompt, response}
        return {"prompt": prompt, "response": response, "system": _named(columns, SYSTEM_WORDS, used),
                "context": _named(columns, CONTEXT_WORDS, used)}
    if task == "text":
        named = [c for c in columns if any(w in c.lower() for w in TEXT_WORDS)]
        if sample_rows:
            long_texts = [c for c in by_length if stats[c]["mean_chars"] >= 40]
            chosen = [c for c in columns if c in named or c in long_texts] or by_length[:1]
        else:
            chosen = named or columns[:1]
        return {"text_columns": chosen}
    if task == "classification":
        label = _named(columns, LABEL_WORDS, set())
        if sample_rows:
            candidates = [c for c in columns if stats[c]["filled"] and 2 <= stats[c]["distinct"] <= max(2, min(100, stats[c]["filled"] // 2))
                          and stats[c]["mean_chars"] <= 40]
            if label is None or label not in candidates:
                label = min(candidates, key=lambda c: (stats[c]["distinct"], stats[c]["mean_chars"])) if candidates else label
        text = _named(columns, TEXT_WORDS + ("question", "prompt", "input", "ticket", "subject"), {label} if label else set())
        if sample_rows and by_length:
            longest = next((c for c in by_length if c != label), None)
            if text is None or (longest and stats[text]["mean_chars"] * 3 < stats[longest]["mean_chars"]):
                text = longest
        if text is None:
            text = next((c for c in columns if c != label), None)
        return {"text": text, "label": label}
    raise ValueError(f"Unknown task kind {task!r}; expected instruction, text or classification.")


@dataclass
class LabelDistribution:
    counts: list[tuple[str, int]]  # most frequent first
    empty: int
    warnings: list[str]
    problems: list[str]  # stop training: fix these first

    def as_dict(self) -> dict[str, Any]:
        return {"counts": [{"label": label, "count": n} for label, n in self.counts], "empty": self.empty,
                "warnings": self.warnings, "problems": self.problems}


RARE_LABEL_MIN = 5


def label_distribution(store: LocalArtifactStore, dataset: Dataset, label_column: str, rare_below: int = RARE_LABEL_MIN) -> LabelDistribution:
    """How often each label occurs, with warnings for rare labels and problems that stop training."""
    if label_column not in dataset.columns:
        return LabelDistribution([], 0, [], [f"The dataset has no column named {label_column!r}."])
    counts: dict[str, int] = {}
    empty = 0
    for row in iter_rows(store, dataset):
        value = (row.get(label_column) or "").strip()
        if not value:
            empty += 1
            continue
        counts[value] = counts.get(value, 0) + 1
        if len(counts) > 10_000:
            return LabelDistribution([], empty, [], [f"Column {label_column!r} has more than 10,000 different values; it looks like "
                                                     "free text, not a label. Choose the column that holds the category."])
    return summarise_labels(counts, empty, label_column, rare_below)


def summarise_labels(counts: dict[str, int], empty: int, label_column: str, rare_below: int = RARE_LABEL_MIN) -> LabelDistribution:
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    warnings: list[str] = []
    problems: list[str] = []
    total = sum(counts.values())
    if not ordered:
        problems.append(f"Column {label_column!r} is empty in every row, so there is nothing to learn. Choose the column that holds the labels.")
    elif len(ordered) == 1:
        problems.append(f"Column {label_column!r} has only one label ({ordered[0][0]!r}); a classifier needs at least two. "
                        "Add examples of the other classes, or choose another column.")
    else:
        rare = [label for label, n in ordered if n < rare_below]
        if rare:
            shown = ", ".join(repr(label) for label in rare[:10]) + (f" and {len(rare) - 10} more" if len(rare) > 10 else "")
            warnings.append(f"{len(rare)} label(s) have fewer than {rare_below} examples ({shown}); the model will hardly learn them. "
                            "Add examples, or merge them into a broader label.")
        if len(ordered) > 100:
            warnings.append(f"Column {label_column!r} has {len(ordered)} different labels; check that it really holds categories.")
        if ordered[0][1] / total > 0.9:
            warnings.append(f"{ordered[0][1] / total:.0%} of the rows have the label {ordered[0][0]!r}; a model can score well by always "
                            "answering it. Add examples of the other labels if you can.")
    if empty:
        warnings.append(f"{empty:,} row(s) have no label; they are left out of training.")
    return LabelDistribution(ordered, empty, warnings, problems)


def column_problems(dataset: Dataset, task: str, mapping: dict[str, Any]) -> dict[str, str]:
    """Problems with a column mapping that the profile can already tell (role -> message)."""
    problems: dict[str, str] = {}
    profile = dataset.profile or {}
    by_name = {c["name"]: c for c in profile.get("columns", [])}
    roles = {"instruction": ("prompt", "response"), "classification": ("text", "label")}.get(task, ())
    for role in roles:
        column = mapping.get(role)
        if not column:
            problems[role] = f"Choose the {role} column."
        elif column not in dataset.columns:
            problems[role] = f"The dataset has no column named {column!r}."
        elif column in by_name and by_name[column]["filled"] == 0:
            problems[role] = f"Column {column!r} is empty in every row. Choose the column that holds the {role}s."
    if task == "instruction" and mapping.get("prompt") and mapping.get("prompt") == mapping.get("response"):
        problems["response"] = "The prompt and the response must be different columns."
    if task == "text":
        chosen = mapping.get("text_columns") or []
        if not chosen:
            problems["text_columns"] = "Choose at least one text column."
        for column in chosen:
            if column not in dataset.columns:
                problems["text_columns"] = f"The dataset has no column named {column!r}."
            elif column in by_name and by_name[column]["filled"] == 0:
                problems["text_columns"] = f"Column {column!r} is empty in every row."
    if task == "classification" and not problems.get("label") and mapping.get("label") in by_name:
        label = by_name[mapping["label"]]
        if label["top_values"] is not None and len(label["top_values"]) == 1 and label["distinct"] == 1:
            problems["label"] = (f"Column {mapping['label']!r} has only one label ({label['top_values'][0][0]!r}); a classifier needs at "
                                 "least two. Add examples of the other classes, or choose another column.")
    return problems


def instruction_pairs(store: LocalArtifactStore, dataset: Dataset, prompt_column: str, response_column: str) -> list[tuple[str, str]]:
    """(prompt, response) pairs from the training copy, skipping rows where either is empty."""
    return [
        (row[prompt_column].strip(), row[response_column].strip())
        for row in iter_training_rows(store, dataset)
        if (row.get(prompt_column) or "").strip() and (row.get(response_column) or "").strip()
    ]


# ---------------------------------------------------------------- validation split and leakage

def _validation_size(n: int, fraction: float) -> int:
    return min(max(1, round(n * fraction)), n - 1)


def split_train_validation(rows: list, fraction: float, seed: int, *, stratify_by: Callable[[Any], Any] | None = None) -> tuple[list, list]:
    """A seeded shuffle, then at least one validation row (and at least one training row).
    With stratify_by (e.g. the label of a row) every label keeps its share in both parts."""
    if len(rows) < 2:
        raise ValueError("At least 2 rows are needed to set a validation row aside.")
    if stratify_by is not None:
        return stratified_split(rows, [stratify_by(r) for r in rows], fraction, seed)
    shuffled = list(rows)
    random.Random(seed).shuffle(shuffled)
    n_validation = _validation_size(len(shuffled), fraction)
    return shuffled[n_validation:], shuffled[:n_validation]


def stratified_split(rows: list, labels: list, fraction: float, seed: int) -> tuple[list, list]:
    """Per label, the same share to validation (largest remainders); a label with one row stays in
    training. Always at least one validation row and at least one training row."""
    rng = random.Random(seed)
    groups: dict[Any, list] = {}
    for row, label in zip(rows, labels):
        groups.setdefault(label, []).append(row)
    target = _validation_size(len(rows), fraction)
    keys = sorted(groups, key=str)
    for key in keys:
        rng.shuffle(groups[key])
    exact = {k: len(groups[k]) * target / len(rows) for k in keys}
    take = {k: min(int(exact[k]), len(groups[k]) - 1) for k in keys}
    remaining = target - sum(take.values())
    for key in sorted(keys, key=lambda k: (-(exact[k] - int(exact[k])), str(k))):
        if remaining <= 0:
            break
        if take[key] < len(groups[key]) - 1:
            take[key] += 1
            remaining -= 1
    if sum(take.values()) == 0:  # every label has one row: fall back to one row of the largest group
        largest = max(keys, key=lambda k: len(groups[k]))
        take[largest] = 1
    train, validation = [], []
    for key in keys:
        validation.extend(groups[key][:take[key]])
        train.extend(groups[key][take[key]:])
    rng.shuffle(train)
    rng.shuffle(validation)
    return train, validation


@dataclass
class LeakageReport:
    exact: int
    near: int
    validation_rows: int
    examples: list[dict[str, Any]]

    @property
    def message(self) -> str | None:
        if not (self.exact or self.near):
            return None
        return (f"{self.exact + self.near} of {self.validation_rows} validation rows also appear in training "
                f"({self.exact} exactly, {self.near} nearly: same words ignoring case, spacing and punctuation). "
                "Validation scores will look better than they are; remove the duplicates from the file.")

    def as_dict(self) -> dict[str, Any]:
        return {"exact": self.exact, "near": self.near, "validation_rows": self.validation_rows,
                "examples": self.examples, "message": self.message}


def leakage_check(train: list, validation: list, text_of: Callable[[Any], str] = lambda r: r if isinstance(r, str) else "\x1f".join(map(str, r))) -> LeakageReport:
    """Validation rows that also occur in training, exactly or nearly."""
    exact_keys = {text_of(r) for r in train}
    near_keys = {near_duplicate_key(text_of(r)) for r in train}
    exact = near = 0
    examples = []
    for row in validation:
        text = text_of(row)
        if text in exact_keys:
            exact += 1
            kind = "exact"
        elif near_duplicate_key(text) in near_keys:
            near += 1
            kind = "near"
        else:
            continue
        if len(examples) < 3:
            examples.append({"kind": kind, "text": text[:200]})
    return LeakageReport(exact, near, len(validation), examples)


def datasets_for(db: Session, workspace_id: int) -> list[Dataset]:
    return list(db.scalars(select(Dataset).where(Dataset.workspace_id == workspace_id).order_by(Dataset.id.desc())))


def delete_dataset(db: Session, store: LocalArtifactStore, dataset: Dataset) -> None:
    running = db.scalar(select(Job).where((Job.dataset_id == dataset.id) | (Job.validation_dataset_id == dataset.id),
                                          Job.status.in_(["queued", "running"])))
    if running is not None:
        raise DatasetError("A job is still using this dataset. Cancel it or wait for it to finish, then delete the dataset.", 409)
    db.delete(dataset)
    db.flush()
    store.delete(f"datasets/{dataset.id}")


# ---------------------------------------------------------------- token lengths for a base model

TOKEN_SAMPLE_ROWS = 20_000


def tokenizer_file_for(location: str) -> Path | None:
    folder = Path(location)
    candidate = folder / "tokenizer.json" if folder.is_dir() else folder.parent / "tokenizer.json"
    return candidate if candidate.is_file() else None


def token_lengths(store: LocalArtifactStore, dataset: Dataset, *, model_key: str, model_location: str, columns: list[str],
                  max_length: int) -> dict[str, Any]:
    """Token counts of the chosen columns (joined as the model would read them) with the base
    model's own tokenizer: histogram, percentiles and rows over max_length. Large datasets are
    measured on an even sample of TOKEN_SAMPLE_ROWS rows. Cached as an artifact per model and
    columns."""
    from app.services.profiling import load_tokenizer, token_length_report

    unknown = [c for c in columns if c not in dataset.columns]
    if unknown:
        raise DatasetError(f"The dataset has no column named {unknown[0]!r}.")
    if not columns:
        raise DatasetError("Choose at least one column to measure.")
    if not 1 <= max_length <= 1_000_000:
        raise DatasetError("The maximum length must be between 1 and 1,000,000 tokens.")
    tokenizer_path = tokenizer_file_for(model_location)
    if tokenizer_path is None:
        raise DatasetError(f"The base model {model_key!r} has no tokenizer.json in its folder, so its tokens cannot be counted here.", 409)
    cache_id = hashlib.sha1(json.dumps([model_key, str(tokenizer_path), tokenizer_path.stat().st_mtime_ns, columns, max_length,
                                        dataset.pii_masked]).encode()).hexdigest()[:20]
    cache_key = dataset_key(dataset.id, f"token_lengths/{cache_id}.json")
    if store.exists(cache_key):
        try:
            return json.loads(store.path(cache_key).read_text())
        except (OSError, ValueError):
            pass
    stride = max(1, math.ceil(dataset.row_count / TOKEN_SAMPLE_ROWS))
    texts: list[tuple[int, str]] = []
    for number, row in enumerate(iter_training_rows(store, dataset), start=1):
        if (number - 1) % stride:
            continue
        texts.append((number, "\n\n".join((row.get(c) or "") for c in columns)))
    report = token_length_report(texts, load_tokenizer(tokenizer_path), max_length, dataset.row_count)
    report.update({"base_model": model_key, "columns": columns})
    tmp = store.temp_path(".json")
    tmp.write_text(json.dumps(report))
    store.put_file(cache_key, tmp)
    return report


def sample_rows(store: LocalArtifactStore, dataset: Dataset, limit: int = 200) -> list[dict[str, str]]:
    rows = []
    for row in iter_rows(store, dataset):
        rows.append(row)
        if len(rows) >= limit:
            break
    return rows


def split_check(store: LocalArtifactStore, dataset: Dataset, task: str, mapping: dict[str, Any], fraction: float = 0.1,
                seed: int = 0) -> dict[str, Any]:
    """The validation split a job with this mapping would get (stratified by label for
    classification), its sizes, and which validation rows also appear in training."""
    if task == "instruction":
        keys = [mapping.get("prompt"), mapping.get("response")]
    elif task == "classification":
        keys = [mapping.get("text"), mapping.get("label")]
    else:
        keys = list(mapping.get("text_columns") or [])
    keys = [k for k in keys if k]
    missing = [k for k in keys if k not in dataset.columns]
    if not keys or missing:
        raise DatasetError(f"The dataset has no column named {missing[0]!r}." if missing else "Choose the columns first.")
    rows = [tuple((row.get(k) or "").strip() for k in keys) for row in iter_training_rows(store, dataset)]
    rows = [r for r in rows if all(r)] if task != "text" else [r for r in rows if any(r)]
    if len(rows) < 2:
        raise DatasetError("Fewer than 2 rows have every chosen column filled; a validation row cannot be set aside.")
    stratify = (lambda r: r[-1]) if task == "classification" else None
    train, validation = split_train_validation(rows, fraction, seed, stratify_by=stratify)
    text_of = (lambda r: r[0]) if task in ("instruction", "classification") else (lambda r: "\x1f".join(r))
    leakage = leakage_check(train, validation, text_of=text_of)
    return {"train_rows": len(train), "validation_rows": len(validation), "stratified": stratify is not None,
            "leakage": leakage.as_dict()}
