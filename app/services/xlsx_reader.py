"""Reading Excel .xlsx workbooks safely: the archive is checked before it is opened, the sheet is
read under limits, and the first sheet that holds data is taken when none is named.

An .xlsx file is a ZIP archive of XML parts. A small upload can unpack to gigabytes (a "zip bomb":
1 GB of repeated shared strings packs into about 1 MB), and a small sheet can still expand into
millions of rows or gigabytes of text (a gap to row 100,000,000, one long shared string used in
every cell). So, before openpyxl sees the file, the archive's directory is checked (number of
parts, each part's and the total unpacked size, each large part's compression ratio); Python's
zipfile never inflates a part beyond the size its directory declares, so those numbers hold. While
the sheet is read, the rows and the bytes of text it yields are counted and capped. Each refusal is
a plain message naming the limit and its setting.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.config import Settings, get_settings
from app.services.tabular_formats import MAX_COLUMNS, Table, TableError, excel_cell

# Parts smaller than this are not judged by their compression ratio: they cannot grow far.
RATIO_CHECKED_FROM_BYTES = 1024 * 1024
# Rows before a sheet counts as holding data: a header and one data row.
ROWS_FOR_DATA = 2

_EXPORT_AS_CSV = "Export the sheet as CSV and upload that, or ask your administrator to raise"


@dataclass(frozen=True)
class XlsxLimits:
    """The limits one workbook is read under (from the TAILOR_XLSX_* settings)."""

    max_parts: int
    max_part_bytes: int
    max_unpacked_bytes: int
    max_compression_ratio: float
    max_rows: int
    max_text_bytes: int

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> XlsxLimits:
        s = settings or get_settings()
        return cls(
            max_parts=s.xlsx_max_parts,
            max_part_bytes=s.xlsx_max_part_bytes,
            max_unpacked_bytes=s.xlsx_max_unpacked_bytes,
            max_compression_ratio=s.xlsx_max_compression_ratio,
            max_rows=s.xlsx_max_rows,
            max_text_bytes=s.xlsx_max_text_bytes,
        )


def _size(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:,.1f} GB"  # pragma: no cover - the loop returns


def declared_part_count(path: Path) -> int | None:
    """The number of parts an archive's end record declares, read without loading its directory
    (a directory of millions of entries would take gigabytes as ZipInfo objects); None when the
    file has no readable end record."""
    try:
        with open(path, "rb") as f:
            end = zipfile._EndRecData(f)  # type: ignore[attr-defined] # the stdlib's own reader of that record
    except OSError:
        return None
    return None if end is None else int(end[zipfile._ECD_ENTRIES_TOTAL])  # type: ignore[attr-defined]


def check_part_count(path: Path, limits: XlsxLimits | None = None) -> None:
    """Refuse an archive that declares more parts than the limit, before anything reads its directory."""
    limits = limits or XlsxLimits.from_settings()
    count = declared_part_count(path)
    if count is not None and count > limits.max_parts:
        raise TableError(
            f"This workbook holds {count:,} parts; Tailor opens workbooks of at most {limits.max_parts:,} parts. "
            f"{_EXPORT_AS_CSV} TAILOR_XLSX_MAX_PARTS.",
            413,
        )


def check_archive(path: Path, limits: XlsxLimits) -> None:
    """Refuse a workbook whose archive would unpack to too much, from its directory alone (nothing
    is inflated): too many parts, a part or all parts too large unpacked, a part packed too tightly."""
    check_part_count(path, limits)
    try:
        with zipfile.ZipFile(path) as archive:
            parts = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError):
        raise TableError(
            "This .xlsx file could not be opened as an Excel workbook (it may be damaged). "
            "Open it in Excel or LibreOffice, save it again, and upload that.",
            415,
        ) from None
    total = 0
    for part in parts:
        if part.file_size > limits.max_part_bytes:
            raise TableError(
                f"This workbook's part {part.filename!r} unpacks to {_size(part.file_size)}; Tailor reads parts of at most "
                f"{_size(limits.max_part_bytes)} unpacked. {_EXPORT_AS_CSV} TAILOR_XLSX_MAX_PART_BYTES.",
                413,
            )
        if part.file_size >= RATIO_CHECKED_FROM_BYTES:
            ratio = part.file_size / max(part.compress_size, 1)
            if ratio > limits.max_compression_ratio:
                raise TableError(
                    f"This workbook's part {part.filename!r} is packed {ratio:,.0f} times (it unpacks from "
                    f"{_size(part.compress_size)} to {_size(part.file_size)}); Tailor opens parts packed at most "
                    f"{limits.max_compression_ratio:,.0f} times, as a defence against zip bombs. "
                    f"{_EXPORT_AS_CSV} TAILOR_XLSX_MAX_COMPRESSION_RATIO.",
                    413,
                )
        total += part.file_size
    if total > limits.max_unpacked_bytes:
        raise TableError(
            f"This workbook unpacks to {_size(total)}; Tailor opens workbooks of at most {_size(limits.max_unpacked_bytes)} "
            f"unpacked. {_EXPORT_AS_CSV} TAILOR_XLSX_MAX_UNPACKED_BYTES.",
            413,
        )


def _sheet_rows(worksheet: Any, name: str, limits: XlsxLimits) -> Iterator[tuple[int, list[str]]]:
    """(row number, cells) of one sheet, stopping with a plain message past the row or text limit."""
    text_bytes = 0
    for number, values in enumerate(worksheet.iter_rows(values_only=True), start=1):
        if number > limits.max_rows:
            raise TableError(
                f"Sheet {name!r} has more than {limits.max_rows:,} rows; Tailor reads at most {limits.max_rows:,} rows of a "
                f"sheet. {_EXPORT_AS_CSV} TAILOR_XLSX_MAX_ROWS.",
                413,
            )
        if len(values) > MAX_COLUMNS:
            beyond = len(values) - MAX_COLUMNS
            if values[MAX_COLUMNS:].count(None) != beyond:
                raise TableError(
                    f"Row {number:,} of sheet {name!r} has cells beyond column {MAX_COLUMNS:,}; Tailor reads at most "
                    f"{MAX_COLUMNS:,} columns. Keep only the columns you need and upload again."
                )
            values = values[:MAX_COLUMNS]
        cells = [excel_cell(v) for v in values]
        while cells and cells[-1] == "":
            cells.pop()
        text_bytes += sum(map(len, cells)) + len(cells) + 1  # as written to CSV: cells, commas, line break
        if text_bytes > limits.max_text_bytes:
            raise TableError(
                f"Sheet {name!r} holds more than {_size(limits.max_text_bytes)} of text (reached at row {number:,}); Tailor "
                f"reads at most {_size(limits.max_text_bytes)} from a workbook. {_EXPORT_AS_CSV} TAILOR_XLSX_MAX_TEXT_BYTES.",
                413,
            )
        yield number, cells


def _has_data(worksheet: Any, name: str, limits: XlsxLimits) -> bool:
    """A header and at least one data row (the first ROWS_FOR_DATA rows that are not blank)."""
    filled = 0
    for _, cells in _sheet_rows(worksheet, name, limits):
        if "".join(cells).strip():
            filled += 1
            if filled >= ROWS_FOR_DATA:
                return True
    return False


def _choose_sheet(workbook: Any, names: list[str], sheet: str | None, limits: XlsxLimits) -> tuple[str, list[str]]:
    """The sheet to read and the notes that say which one and why."""
    if sheet:
        if sheet not in names:
            raise TableError(f"The workbook has no sheet named {sheet!r}. Its sheets are: {', '.join(names)}.")
        return sheet, []
    if not names:
        raise TableError("The workbook has no sheets.")
    for name in names:
        workbook[name].reset_dimensions()  # a sheet's own claimed size would pad every row to it
    chosen = next((name for name in names if _has_data(workbook[name], name, limits)), None)
    if chosen is None:
        return names[0], []  # nothing anywhere: the normaliser says the file is empty
    notes = []
    skipped = names[: names.index(chosen)]
    if skipped:
        listed = ", ".join(repr(n) for n in skipped)
        notes.append(
            f"The workbook has {len(names)} sheets ({', '.join(names)}); {listed} "
            f"{'has' if len(skipped) == 1 else 'have'} no data (a header and a row), so the first sheet with data, "
            f"{chosen!r}, was used. To use another, upload the file again and name the sheet."
        )
    elif len(names) > 1:
        notes.append(
            f"The workbook has {len(names)} sheets ({', '.join(names)}); the first, {chosen!r}, was used. "
            "To use another, upload the file again and name the sheet."
        )
    return chosen, notes


def read_xlsx(path: Path, sheet: str | None, limits: XlsxLimits | None = None) -> Table:
    """The named sheet, or the first with data, of a workbook that passed check_archive."""
    limits = limits or XlsxLimits.from_settings()
    check_archive(path, limits)
    try:
        from openpyxl import load_workbook
    except ImportError:  # pragma: no cover - openpyxl is a dependency
        raise TableError("This server cannot read Excel files (openpyxl is missing). Export the sheet as CSV.", 415) from None
    # A file object, not the path: openpyxl judges paths by their extension, and uploads wait
    # under a temporary name.
    handle = open(path, "rb")
    try:
        workbook = load_workbook(handle, read_only=True, data_only=True)
    except Exception:  # noqa: BLE001 - openpyxl raises many kinds on damaged files
        handle.close()
        raise TableError(
            "This .xlsx file could not be opened as an Excel workbook (it may be damaged or password-protected). "
            "Open it in Excel or LibreOffice, save it again, and upload that.",
            415,
        ) from None

    def close() -> None:
        workbook.close()
        handle.close()

    names = list(workbook.sheetnames)
    try:
        chosen, notes = _choose_sheet(workbook, names, sheet, limits)
    except TableError:
        close()
        raise
    except Exception:  # noqa: BLE001 - a damaged sheet fails in many ways part-way through
        close()
        raise _damaged(None) from None
    worksheet = workbook[chosen]
    worksheet.reset_dimensions()

    def rows() -> Iterator[tuple[int, list[str]]]:
        try:
            yield from _sheet_rows(worksheet, chosen, limits)
        except TableError:
            raise
        except Exception:  # noqa: BLE001 - a damaged sheet fails in many ways part-way through
            raise _damaged(chosen) from None
        finally:
            close()

    return Table(format="xlsx", header=[], rows=rows(), encoding="xlsx", delimiter="", sheet=chosen, notes=notes, row_word="row")


def _damaged(sheet: str | None) -> TableError:
    what = f"Sheet {sheet!r}" if sheet else "The workbook"
    return TableError(
        f"{what} could not be read to the end (the workbook may be damaged). Save it again in Excel or LibreOffice, or export it as CSV.",
        415,
    )
