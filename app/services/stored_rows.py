"""Reading a stored dataset back: rows for training, previews, pages and searches (jumping close
to a page with the row index), and the CSV download."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from app.models import Dataset
from app.services.artifacts import ArtifactStore
from app.services.dataset_store import ROW_INDEX_NAME, dataset_key, training_key
from app.services.plain_csv import ROW_INDEX_EVERY
from app.services.tabular_formats import neutralise_formula

PAGE_SIZE = 25


def iter_rows(store: ArtifactStore, dataset: Dataset) -> Iterator[dict[str, str]]:
    """The stored rows exactly as uploaded (normalised to UTF-8 CSV)."""
    with open(store.path(dataset.storage_key), encoding="utf-8", newline="") as f:
        yield from csv.DictReader(f)


def iter_training_rows(store: ArtifactStore, dataset: Dataset) -> Iterator[dict[str, str]]:
    with open(store.path(training_key(dataset)), encoding="utf-8", newline="") as f:
        yield from csv.DictReader(f)


def display_row(row: dict[str, str]) -> dict[str, str]:
    """A row as shown to people or exported: formula-like cells made inert for spreadsheets."""
    return {key: neutralise_formula(value or "") for key, value in row.items()}


def preview_rows(store: ArtifactStore, dataset: Dataset, limit: int) -> list[dict[str, str]]:
    rows = []
    for row in iter_rows(store, dataset):
        rows.append(display_row(row))
        if len(rows) >= limit:
            break
    return rows


def sample_rows(store: ArtifactStore, dataset: Dataset, limit: int = 200) -> list[dict[str, str]]:
    rows = []
    for row in iter_rows(store, dataset):
        rows.append(row)
        if len(rows) >= limit:
            break
    return rows


def instruction_pairs(store: ArtifactStore, dataset: Dataset, prompt_column: str, response_column: str) -> list[tuple[str, str]]:
    """(prompt, response) pairs from the training copy, skipping rows where either is empty."""
    return [
        (row[prompt_column].strip(), row[response_column].strip())
        for row in iter_training_rows(store, dataset)
        if (row.get(prompt_column) or "").strip() and (row.get(response_column) or "").strip()
    ]


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


@dataclass
class RowPage:
    rows: list[tuple[int, dict[str, str]]]  # (row number in the dataset, 1-based; cells made inert)
    page: int
    page_size: int
    query: str
    has_next: bool
    total: int | None  # rows (or matches) in all; None when a search stopped early


def _row_index(store: ArtifactStore, dataset: Dataset) -> list[int]:
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


def _rows_from(store: ArtifactStore, dataset: Dataset, first_row: int) -> Iterator[tuple[int, list[str]]]:
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


def page_rows(store: ArtifactStore, dataset: Dataset, page: int = 1, query: str = "", page_size: int = PAGE_SIZE) -> RowPage:
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


def export_csv_lines(store: ArtifactStore, dataset: Dataset, training_copy: bool = False) -> Iterator[str]:
    """The dataset as CSV text for download, formula-like cells and column names made inert."""
    key = training_key(dataset) if training_copy else dataset.storage_key
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    with open(store.path(key), encoding="utf-8", newline="") as f:
        for cells in csv.reader(f):
            writer.writerow([neutralise_formula(c) for c in cells])  # the header's names too: a spreadsheet runs them alike
            if buffer.tell() > 256 * 1024:
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
    yield buffer.getvalue()
