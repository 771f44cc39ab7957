"""Datasets: stream an upload to disk, detect its encoding and delimiter, normalise it to a UTF-8
CSV in the artifact store, and read rows back for previews and training."""

from __future__ import annotations

import codecs
import csv
import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import Dataset, Job
from app.services.artifacts import LocalArtifactStore

CHUNK = 1024 * 1024
SNIFF_BYTES = 64 * 1024
DELIMITERS = ",;\t|"
# One cell may hold a long document; beyond this it is almost certainly not text data.
MAX_CELL_CHARS = 16 * 1024 * 1024
MAX_COLUMNS = 2000
NORMALISED_NAME = "rows.csv"

csv.field_size_limit(MAX_CELL_CHARS)


class DatasetError(ValueError):
    """A dataset problem worded for the person who uploaded it; status is the HTTP code to use."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass
class IngestReport:
    encoding: str
    delimiter: str
    columns: list[str]
    row_count: int
    ragged_rows: list[int] = field(default_factory=list)
    renamed_headers: list[str] = field(default_factory=list)


def stream_to_file(source: BinaryIO, target: Path, limit_bytes: int) -> tuple[int, str]:
    """Copy an upload to target in chunks, enforcing the size limit; returns (bytes, sha256)."""
    digest = hashlib.sha256()
    size = 0
    with open(target, "wb") as out:
        while chunk := source.read(CHUNK):
            size += len(chunk)
            if size > limit_bytes:
                raise DatasetError(
                    f"The file is larger than the upload limit of {format_bytes(limit_bytes)}. "
                    "Split it or ask your administrator to raise TAILOR_MAX_UPLOAD_BYTES.",
                    status=413,
                )
            digest.update(chunk)
            out.write(chunk)
    return size, digest.hexdigest()


def format_bytes(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def detect_encoding(path: Path) -> str:
    """BOMs first; then UTF-8 if the whole file decodes; else Windows-1252 (Excel's default)."""
    with open(path, "rb") as f:
        head = f.read(SNIFF_BYTES)
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    if head.startswith(b"PK\x03\x04"):
        raise DatasetError("This is a ZIP archive (or an Excel file), not a CSV. Export the sheet as CSV and upload that.", 415)
    if b"\x00" in head:
        raise DatasetError("This file contains binary data (NUL bytes), not CSV text. Export your data as CSV and upload that.", 415)
    decoder = codecs.getincrementaldecoder("utf-8")()
    with open(path, "rb") as f:
        try:
            while chunk := f.read(CHUNK):
                decoder.decode(chunk)
            decoder.decode(b"", final=True)
            return "utf-8"
        except UnicodeDecodeError:
            return "cp1252"


def detect_delimiter(sample: str) -> str:
    try:
        return csv.Sniffer().sniff(sample, delimiters=DELIMITERS).delimiter
    except csv.Error:
        first_line = sample.splitlines()[0] if sample else ""
        counts = {d: first_line.count(d) for d in DELIMITERS}
        best = max(counts, key=counts.get)
        return best if counts[best] else ","


def clean_headers(raw: list[str]) -> tuple[list[str], list[str]]:
    """Strip names, name empty ones column_N and suffix duplicates; returns (names, notes)."""
    names: list[str] = []
    notes: list[str] = []
    seen: dict[str, int] = {}
    for index, name in enumerate(raw, start=1):
        clean = name.strip()
        if not clean:
            clean = f"column_{index}"
            notes.append(f"Column {index} had no name; it is called {clean}.")
        if clean in seen:
            seen[clean] += 1
            renamed = f"{clean}_{seen[clean]}"
            notes.append(f"Column {index} repeats the name {clean!r}; it is called {renamed}.")
            clean = renamed
        seen.setdefault(clean, 1)
        names.append(clean)
    return names, notes


def _open_text(path: Path, encoding: str):
    errors = "replace" if encoding == "cp1252" else "strict"
    return open(path, encoding=encoding, errors=errors, newline="")


def normalise_csv(source: Path, target: Path) -> IngestReport:
    """Read any supported CSV and write it as UTF-8, comma-delimited, with clean headers."""
    encoding = detect_encoding(source)
    with _open_text(source, encoding) as f:
        sample = f.read(SNIFF_BYTES)
    if not sample.strip():
        raise DatasetError("The file is empty. Upload a CSV with a header row and at least one data row.")
    delimiter = detect_delimiter(sample)
    ragged: list[int] = []
    rows = 0
    with _open_text(source, encoding) as f, open(target, "w", encoding="utf-8", newline="") as out:
        reader = csv.reader(f, delimiter=delimiter, strict=False)
        writer = csv.writer(out)
        try:
            header = next(reader, None)
            while header is not None and not any(cell.strip() for cell in header):
                header = next(reader, None)
            if header is None:
                raise DatasetError("The file is empty. Upload a CSV with a header row and at least one data row.")
            if len(header) > MAX_COLUMNS:
                raise DatasetError(f"The file has {len(header):,} columns; Tailor reads at most {MAX_COLUMNS:,}. Keep only the columns you need.")
            columns, notes = clean_headers(header)
            writer.writerow(columns)
            for record in reader:
                if not any(cell.strip() for cell in record):
                    continue
                rows += 1
                if len(record) != len(columns):
                    if len(ragged) < 1000:
                        ragged.append(reader.line_num)
                    record = (record + [""] * len(columns))[: len(columns)]
                writer.writerow(record)
        except csv.Error as exc:
            raise DatasetError(f"Line {reader.line_num} could not be read as CSV ({exc}). Check that quotes are closed and the file is a plain CSV export.") from exc
        except UnicodeDecodeError as exc:
            raise DatasetError("The file's text encoding could not be read. Save it as UTF-8 CSV and upload again.") from exc
    if rows == 0:
        raise DatasetError("The file has a header row but no data rows. Add at least one row of data.")
    return IngestReport(encoding=encoding, delimiter=delimiter, columns=columns, row_count=rows, ragged_rows=ragged, renamed_headers=notes)


def dataset_key(dataset_id: int, name: str = NORMALISED_NAME) -> str:
    return f"datasets/{dataset_id}/{name}"


def ingest_upload(db: Session, store: LocalArtifactStore, *, workspace_id: int, user_id: int | None,
                  filename: str, source: BinaryIO, limit_bytes: int) -> tuple[Dataset, IngestReport | None]:
    """Store an uploaded file as a dataset. Returns (dataset, report); report is None when the
    same file was already uploaded to this workspace (the existing dataset is returned).
    On any error nothing is left behind: no row, no file."""
    filename = Path(filename or "upload.csv").name[:300] or "upload.csv"
    raw = store.temp_path(".upload")
    normalised = store.temp_path(".csv")
    try:
        size, sha256 = stream_to_file(source, raw, limit_bytes)
        existing = db.scalar(select(Dataset).where(Dataset.workspace_id == workspace_id, Dataset.sha256 == sha256))
        if existing is not None:
            return existing, None
        if size == 0:
            raise DatasetError("The file is empty. Upload a CSV with a header row and at least one data row.")
        report = normalise_csv(raw, normalised)
        dataset = Dataset(
            workspace_id=workspace_id, created_by_id=user_id, name=Path(filename).stem[:300] or "dataset",
            original_filename=filename, sha256=sha256, size_bytes=size, row_count=report.row_count,
            columns=report.columns, encoding=report.encoding, delimiter=report.delimiter, storage_key="",
        )
        db.add(dataset)
        db.flush()
        dataset.storage_key = dataset_key(dataset.id)
        try:
            store.put_file(dataset.storage_key, normalised)
            store.put_file(dataset_key(dataset.id, "original" + (Path(filename).suffix[:10] or ".csv")), raw)
            db.flush()
        except BaseException:
            store.delete(f"datasets/{dataset.id}")
            raise
        return dataset, report
    finally:
        for leftover in (raw, normalised):
            leftover.unlink(missing_ok=True)


def iter_rows(store: LocalArtifactStore, dataset: Dataset) -> Iterator[dict[str, str]]:
    with open(store.path(dataset.storage_key), encoding="utf-8", newline="") as f:
        yield from csv.DictReader(f)


def preview_rows(store: LocalArtifactStore, dataset: Dataset, limit: int) -> list[dict[str, str]]:
    rows = []
    for row in iter_rows(store, dataset):
        rows.append(row)
        if len(rows) >= limit:
            break
    return rows


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


def instruction_pairs(store: LocalArtifactStore, dataset: Dataset, prompt_column: str, response_column: str) -> list[tuple[str, str]]:
    """(prompt, response) pairs, skipping rows where either is empty."""
    return [
        (row[prompt_column].strip(), row[response_column].strip())
        for row in iter_rows(store, dataset)
        if (row.get(prompt_column) or "").strip() and (row.get(response_column) or "").strip()
    ]


def split_train_validation(rows: list, fraction: float, seed: int) -> tuple[list, list]:
    """A seeded shuffle, then at least one validation row (and at least one training row)."""
    shuffled = list(rows)
    random.Random(seed).shuffle(shuffled)
    n_validation = min(max(1, round(len(shuffled) * fraction)), len(shuffled) - 1)
    return shuffled[n_validation:], shuffled[:n_validation]


def datasets_for(db: Session, workspace_id: int) -> list[Dataset]:
    return list(db.scalars(select(Dataset).where(Dataset.workspace_id == workspace_id).order_by(Dataset.id.desc())))


def delete_dataset(db: Session, store: LocalArtifactStore, dataset: Dataset) -> None:
    running = db.scalar(select(Job).where(Job.dataset_id == dataset.id, Job.status.in_(["queued", "running"])))
    if running is not None:
        raise DatasetError("A job is still using this dataset. Cancel it or wait for it to finish, then delete the dataset.", 409)
    db.delete(dataset)
    db.flush()
    store.delete(f"datasets/{dataset.id}")
