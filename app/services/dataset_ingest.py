"""Ingest: stream an upload to disk, store it as a dataset (normalised and profiled, or kept as it
is when the compiled scanner finds nothing to fix), list and delete datasets."""

from __future__ import annotations

import hashlib
import json
import os
from contextlib import nullcontext
from pathlib import Path
from typing import BinaryIO

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.domain.text import without_controls
from app.models import Dataset, Job
from app.services.artifacts import ArtifactStore
from app.services.dataset_normalise import (
    IngestReport,
    check_unclosed_quote_at_end,
    clean_headers,
    is_blank,
    link_or_copy,
    write_normalised,
)
from app.services.dataset_store import ROW_INDEX_NAME, DatasetError, dataset_key
from app.services.plain_csv import ScannerProcess, plain_header, scan_plain_csv
from app.services.tabular_formats import MAX_COLUMNS, open_table

CHUNK = 1024 * 1024
# Smaller uploads are read by the general reader in the web process; from this size on the compiled
# scanner in a child process is quicker, despite the second or so the child needs to start.
PLAIN_CSV_MIN_BYTES = 16 * 1024 * 1024


def upload_too_large_message(limit_bytes: int) -> str:
    return (
        f"The file is larger than the upload limit of {format_bytes(limit_bytes)}. "
        "Split it or ask your administrator to raise TAILOR_MAX_UPLOAD_BYTES."
    )


def format_bytes(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def ingest_upload(
    db: Session,
    store: ArtifactStore,
    *,
    workspace_id: int,
    user_id: int | None,
    filename: str,
    source: BinaryIO,
    limit_bytes: int,
    sheet: str | None = None,
) -> tuple[Dataset, IngestReport | None]:
    """Store an uploaded file (CSV, .xlsx or .jsonl) as a dataset. Returns (dataset, report); report
    is None when the same file (and sheet) was already uploaded to this workspace: the existing
    dataset is returned. On any error nothing is left behind: no row, no file."""
    raw = store.temp_path(".upload")
    # A large CSV will likely go to the compiled scanner: its process starts while the upload is copied.
    size = _size_of(source)
    scanner = ScannerProcess() if size is not None and size >= PLAIN_CSV_MIN_BYTES and _may_be_csv(filename) else None
    try:
        receive_upload(source, raw, limit_bytes)
        return ingest_received(db, store, raw, workspace_id=workspace_id, user_id=user_id, filename=filename, sheet=sheet, scanner=scanner)
    finally:
        raw.unlink(missing_ok=True)
        if scanner is not None:
            scanner.close()


def clean_filename(filename: str | None) -> str:
    """The upload's own name without folders or control characters (a NUL, which PostgreSQL
    cannot store, line breaks, escapes), at most 300 characters; "upload.csv" when nothing is left."""
    return Path(without_controls(filename)).name[:300].strip() or "upload.csv"


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


def ingest_received(
    db: Session,
    store: ArtifactStore,
    raw: Path,
    *,
    workspace_id: int,
    user_id: int | None,
    filename: str,
    sheet: str | None = None,
    scanner: ScannerProcess | None = None,
) -> tuple[Dataset, IngestReport | None]:
    """ingest_upload for an upload already written to raw (a temporary path of the store, which
    this moves into place or removes). A large plain CSV is scanned in a child process (scanner,
    when one was started already)."""
    filename = clean_filename(filename)
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
        existing = db.scalar(
            select(Dataset).where(
                Dataset.workspace_id == workspace_id,
                Dataset.sha256 == sha256,
                Dataset.sheet_name.is_(None) if table_sheet is None else Dataset.sheet_name == table_sheet,
            )
        )
        if existing is not None:
            return existing, None
        if plain is not None:
            link_or_copy(raw, normalised)
        else:
            report = write_normalised(table, normalised, work_dir=raw.parent, source=raw)
        name = Path(filename).stem[:250] or "dataset"
        if report.sheet and len(report.profile.get("columns", [])) and report.format == "xlsx":
            name = f"{name} ({report.sheet})"[:300]
        dataset = Dataset(
            workspace_id=workspace_id,
            created_by_id=user_id,
            name=name,
            original_filename=filename,
            sha256=sha256,
            size_bytes=size,
            row_count=report.row_count,
            columns=report.columns,
            encoding=report.encoding,
            delimiter=report.delimiter,
            storage_key="",
            source_format=report.format,
            sheet_name=report.sheet,
            profile=report.profile,
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


def ingest_plain_csv(
    raw: Path, filename: str, work_dir: Path | None = None, *, scanner: ScannerProcess | None = None
) -> tuple[IngestReport, str] | None:
    """(report, sha256) for a UTF-8, comma-delimited CSV with a clean header and nothing to fix,
    from one compiled pass (plain_csv), in the scanner's child process when one is given; None
    for any other file, which write_normalised reads."""
    header = plain_header(raw, filename)
    if header is None or is_blank(header) or len(header) > MAX_COLUMNS or clean_headers(header)[0] != header:
        return None
    scanned = scanner.scan(raw, header, work_dir) if scanner is not None else scan_plain_csv(raw, header, work_dir)
    if scanned is None or scanned.rows == 0:
        return None
    try:
        check_unclosed_quote_at_end(scanned.last_row, 0, "line", header)
    except DatasetError:
        return None  # the general reader reports it, with its line number
    report = IngestReport(
        encoding="utf-8",
        delimiter=",",
        columns=header,
        row_count=scanned.rows,
        profile=scanned.profile,
        format="csv",
        row_word="line",
        row_index=scanned.row_index,
    )
    return report, scanned.sha256


def datasets_for(db: Session, workspace_id: int) -> list[Dataset]:
    return list(db.scalars(select(Dataset).where(Dataset.workspace_id == workspace_id).order_by(Dataset.id.desc())))


def delete_dataset(db: Session, store: ArtifactStore, dataset: Dataset) -> None:
    running = db.scalar(
        select(Job).where((Job.dataset_id == dataset.id) | (Job.validation_dataset_id == dataset.id), Job.status.in_(["queued", "running"]))
    )
    if running is not None:
        raise DatasetError("A job is still using this dataset. Cancel it or wait for it to finish, then delete the dataset.", 409)
    db.delete(dataset)
    db.flush()
    store.delete(f"datasets/{dataset.id}")
