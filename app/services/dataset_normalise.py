"""Normalisation: read a table (any supported CSV, .xlsx, .jsonl) and write it as a UTF-8,
comma-delimited CSV with clean headers, profiling every row in the same pass; or keep the upload as
it is when it already is such a CSV."""

from __future__ import annotations

import csv
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.services.dataset_store import DatasetError
from app.services.plain_csv import ROW_INDEX_EVERY
from app.services.profiling import ProfileBuilder
from app.services.tabular_formats import MAX_COLUMNS, SNIFF_BYTES, Table, read_csv

ROWS_AT_ONCE = 1024  # records taken from a reader at a time; a batch without anything to fix skips the per-record checks
MAX_NOTED_ROWS = 1000


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


def is_blank(record: list[str]) -> bool:
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
        if not is_blank(record):
            header, header_at = record, number
            break
    if header is None:
        raise DatasetError("The file is empty. Upload a CSV with a header row and at least one data row.")
    if len(header) > MAX_COLUMNS:
        raise DatasetError(
            f"The header ({word} {header_at:,}) has {len(header):,} columns; Tailor reads at most {MAX_COLUMNS:,}. "
            "Keep only the columns you need and upload again."
        )
    columns, renamed = clean_headers(header)
    width = len(columns)
    ragged: list[int] = []
    ragged_total = 0
    rows = 0
    row_index: list[int] = []
    profile = ProfileBuilder(columns, work_dir)
    last: tuple[int, list[str]] | None = None
    copy_through = (
        source is not None
        and table.format == "csv"
        and table.encoding == "utf-8"
        and table.delimiter == ","
        and header_at == 1
        and columns == header
        and _has_newlines(source)
    )
    copy_source = source if copy_through else None  # the file to replay or link, when it is already clean
    out = writer = None

    def start_writing() -> None:
        nonlocal out, writer
        out = open(target, "w", encoding="utf-8", newline="")
        writer = csv.writer(out)
        writer.writerow(columns)
        if copy_source is not None:  # replay the records that were fine as they were
            replay = read_csv(copy_source).rows
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
        if is_blank(record):
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
        if writer is not None and out is not None:
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
            check_unclosed_quote_at_end(last[1], last[0], word, columns)
        if rows == 0:
            raise DatasetError("The file has a header row but no data rows. Add at least one row of data.")
        if out is not None:
            out.close()
        else:
            assert copy_source is not None  # nothing was written only when the source is copied through
            link_or_copy(copy_source, target)
        result = profile.finish()
    finally:
        if out is not None and not out.closed:
            out.close()
        profile.close()
    notes = list(table.notes)
    if ragged_total:
        shown = ", ".join(f"{n:,}" for n in ragged[:10])
        more = f" and {ragged_total - 10:,} more" if ragged_total > 10 else ""
        notes.append(
            f"{ragged_total:,} row(s) had a different number of cells than the header's {width} ({word}s {shown}{more}); "
            "missing cells were left empty and extra cells dropped."
        )
    return IngestReport(
        encoding=table.encoding,
        delimiter=table.delimiter,
        columns=columns,
        row_count=rows,
        ragged_rows=ragged,
        renamed_headers=renamed,
        notes=notes,
        profile=result,
        format=table.format,
        sheet=table.sheet,
        row_word=word,
        row_index=row_index if out is not None else [],
    )


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
        writer.writerows(records[position : position + step])
        position += step


def _has_newlines(path: Path) -> bool:
    """Line feeds end its lines (not a lone carriage return), so the row index can find records."""
    with open(path, "rb") as f:
        return b"\n" in f.read(SNIFF_BYTES)


def link_or_copy(source: Path, target: Path) -> None:
    """Stored files are never changed in place, so a hard link is as good as a copy, and free."""
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _check_runaway_quote(record: list[str], number: int, word: str, columns: list[str]) -> None:
    """A ragged record with a line break inside a cell is almost always a quote left open."""
    for index, cell in enumerate(record):
        if "\n" in cell or "\r" in cell:
            column = columns[index] if index < len(columns) else f"cell {index + 1}"
            raise DatasetError(
                f"A quote opened in {word} {number:,}, column {column!r}, is not closed where the cell should end, "
                f"so the following lines ran into it. Check the quotes around {word} {number:,} "
                '(a text containing a quote must double it: "").'
            )


def check_unclosed_quote_at_end(record: list[str], number: int, word: str, columns: list[str]) -> None:
    """A quote left open in the last record swallows the rest of the file, ending in a line break."""
    for index, cell in enumerate(record):
        if cell.endswith(("\n", "\r")) and ("\n" in cell[:-1] or len(cell) > 1):
            raise DatasetError(
                f"A quote opened in {word} {number:,}, column {columns[index]!r}, is never closed, so everything "
                'after it ran into one cell. Close the quote (a text containing a quote must double it: "").'
            )
