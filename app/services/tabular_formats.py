"""Reading uploaded tables: CSV (any common encoding and delimiter), Excel .xlsx and JSON Lines.

Each reader yields a header and then (source row number, cells) pairs, streaming, so a 1 GB file
never sits in memory. Problems are raised as TableError with a message a person can act on.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

CHUNK = 1024 * 1024
SNIFF_BYTES = 64 * 1024
DELIMITERS = ",;\t|"
DELIMITER_NAMES = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}
# One cell may hold a long document; beyond this it is almost certainly not text data.
MAX_CELL_CHARS = 16 * 1024 * 1024
MAX_COLUMNS = 2000
MAX_LINE_BYTES = 4 * MAX_CELL_CHARS
MIXED_ENCODING = "utf-8+cp1252"

csv.field_size_limit(MAX_CELL_CHARS)


class TableError(ValueError):
    """A problem with an uploaded file, worded for the person who uploaded it."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass
class Table:
    format: str  # csv | xlsx | jsonl
    header: list[str]
    rows: Iterator[tuple[int, list[str]]]  # (row number as the user sees it, cells)
    encoding: str = "utf-8"
    delimiter: str = ","
    sheet: str | None = None
    notes: list[str] = field(default_factory=list)
    row_word: str = "line"  # how to name a position in this format: "line" or "row"


# ---------------------------------------------------------------- format and encoding detection

_MAGIC = [
    (b"%PDF", "a PDF document"),
    (b"\x1f\x8b", "a gzip-compressed file"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"7z\xbc\xaf", "a 7-Zip archive"),
    (b"Rar!", "a RAR archive"),
    (b"BZh", "a bzip2-compressed file"),
    (b"\xfd7zXZ", "an xz-compressed file"),
    (b"SQLite format 3", "an SQLite database"),
    (b"\x7fELF", "a program (ELF binary)"),
    (b"MZ", "a Windows program"),
]
_OLE2 = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"


def _is_xlsx(path: Path) -> bool:
    from app.services.xlsx_reader import check_part_count  # it builds on this module's Table and TableError

    check_part_count(path)  # before zipfile loads the whole directory
    try:
        with zipfile.ZipFile(path) as archive:
            return "xl/workbook.xml" in archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return False


def detect_format(path: Path, filename: str) -> str:
    """'csv', 'xlsx' or 'jsonl'; refuses archives, images, documents and other binaries."""
    with open(path, "rb") as f:
        head = f.read(SNIFF_BYTES)
    suffix = Path(filename).suffix.lower()
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        if _is_xlsx(path):
            return "xlsx"
        if suffix == ".xlsx":
            raise TableError(
                "This .xlsx file could not be opened as an Excel workbook (it may be damaged). "
                "Open it in Excel or LibreOffice, save it again, and upload that.",
                415,
            )
        raise TableError("This is a ZIP archive (or an Excel file), not a CSV. Unzip it, or export the sheet as CSV, and upload that.", 415)
    if head.startswith(_OLE2):
        raise TableError("This is an old Excel .xls file (or another Office document). Save it as .xlsx or CSV and upload that.", 415)
    for magic, what in _MAGIC:
        if head.startswith(magic):
            raise TableError(f"This file is {what}, not a table. Export your data as CSV, .xlsx or .jsonl and upload that.", 415)
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if stripped.startswith(b"{") and suffix not in (".csv", ".tsv", ".txt"):
        return "jsonl"
    if suffix == ".xlsx":
        raise TableError("This file is named .xlsx but is not an Excel workbook. Upload the real workbook, or export it as CSV.", 415)
    return "csv"


def _utf16_without_bom(head: bytes) -> str | None:
    sample = head[:4096]
    if len(sample) < 8:
        return None
    even_zeros = sample[0::2].count(0) / (len(sample) / 2)
    odd_zeros = sample[1::2].count(0) / (len(sample) / 2)
    if odd_zeros > 0.4 and even_zeros < 0.05:
        return "utf-16-le"
    if even_zeros > 0.4 and odd_zeros < 0.05:
        return "utf-16-be"
    return None


_CONTROL_BYTES = bytes(b for b in range(32) if b not in (9, 10, 13, 12))
_NON_ASCII = re.compile(r"[^\x00-\x7f]")


def _binary_error(what: str = "binary data") -> TableError:
    return TableError(f"This file contains {what}, not CSV text. Export your data as CSV (or .xlsx / .jsonl) and upload that.", 415)


def encoding_of_head(head: bytes) -> str:
    """What a file's first SNIFF_BYTES say: 'utf-8-sig' (a BOM), 'utf-16' (a BOM), 'utf-16-le' or
    'utf-16-be' (by its zero bytes), else 'utf-8' until the rest is read. Refuses binary data."""
    if head.startswith(codecs.BOM_UTF8):
        encoding = "utf-8-sig"
    elif head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    elif (utf16 := _utf16_without_bom(head)) is not None:
        return utf16
    else:
        encoding = "utf-8"
    if head and sum(head.count(b) for b in _CONTROL_BYTES) > max(8, len(head) // 100):
        raise _binary_error()
    return encoding


def detect_encoding(path: Path) -> str:
    """BOMs first, then UTF-16 by its zero bytes; then UTF-8 if the whole file decodes; then
    Windows-1252 (Excel's default), or both when a file mixes UTF-8 and Windows-1252 lines."""
    with open(path, "rb") as f:
        head = f.read(SNIFF_BYTES)
    encoding = encoding_of_head(head)
    if encoding.startswith("utf-16"):
        return encoding
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    line = 1
    run = 0  # bytes since the last line break
    valid_utf8_non_ascii = False
    with open(path, "rb") as f:
        if encoding == "utf-8-sig":
            f.seek(3)
        failed = False
        while chunk := f.read(CHUNK):
            nul = chunk.find(b"\x00")
            if nul >= 0:
                nul_line = line + chunk.count(b"\n", 0, nul)
                raise TableError(
                    f"Line {nul_line:,} contains a NUL byte (binary data), so this is not a plain "
                    "CSV export. Remove the binary content, or export the data as CSV again, and upload that.",
                    415,
                )
            if not failed and chunk.isascii() and not decoder.getstate()[0]:
                pass  # ASCII is UTF-8; the quick check spares decoding most chunks
            elif not failed:
                try:
                    text = decoder.decode(chunk)
                    if not valid_utf8_non_ascii and _NON_ASCII.search(text):
                        valid_utf8_non_ascii = True
                except UnicodeDecodeError:
                    failed = True
            last_newline = chunk.rfind(b"\n")
            if last_newline < 0:
                run += len(chunk)
                if run > MAX_LINE_BYTES:  # one line this long would have to be read into memory whole
                    raise TableError(
                        f"Line {line:,} is longer than {MAX_LINE_BYTES // (1024 * 1024)} MB without a line break, so this is "
                        "not a table of rows. Check that the file is a CSV export with one row per line."
                    )
            else:
                run = len(chunk) - last_newline - 1
            line += chunk.count(b"\n")
            offset += len(chunk)
        if not failed:
            try:
                decoder.decode(b"", final=True)
                return encoding
            except UnicodeDecodeError:
                failed = True
    # Not clean UTF-8: does the file also hold real UTF-8 sequences (a mix), or is it all cp1252?
    with open(path, "rb") as f:
        text_decoder = codecs.getincrementaldecoder("utf-8")(errors="surrogateescape")
        while chunk := f.read(CHUNK):
            text = text_decoder.decode(chunk)
            if re.search(r"[^\x00-\x7f\udc80-\udcff]", text):
                return MIXED_ENCODING
    return "cp1252"


def _not_valid_encoding(encoding: str, exc: UnicodeDecodeError, after_line: int | None = None) -> TableError:
    where = f"after line {after_line:,} " if after_line else ""
    name = "UTF-16" if encoding.startswith("utf-16") else encoding
    return TableError(
        f"The text {where}is not valid {name} ({exc.reason}). Open the file in a spreadsheet or text editor, "
        "save it as UTF-8 CSV, and upload again."
    )


def _utf8_then_cp1252(exc: UnicodeError):
    """Decode error handler: a byte that is not UTF-8 is read as Windows-1252 (mixed files)."""
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    byte = exc.object[exc.start : exc.start + 1]
    return byte.decode("cp1252", errors="replace").replace("\ufffd", byte.decode("latin-1")), exc.start + 1


codecs.register_error("tailor-utf8-cp1252", _utf8_then_cp1252)


def open_text(path: Path, encoding: str):
    if encoding == MIXED_ENCODING:
        return open(path, encoding="utf-8", errors="tailor-utf8-cp1252", newline="")
    errors = "replace" if encoding == "cp1252" else "strict"
    return open(path, encoding=encoding, errors=errors, newline="")


def detect_delimiter(sample: str) -> str:
    """The delimiter that splits the first lines into the most consistent number of cells (>1)."""
    lines = sample.splitlines(keepends=True)
    if len(lines) > 1 and not sample.endswith(("\n", "\r")):
        lines = lines[:-1]  # the sample may end mid-line
    text = "".join(lines[:200])
    best, best_score = ",", (0.0, 0)
    for delimiter in DELIMITERS:
        try:
            records = [r for r in csv.reader(io.StringIO(text), delimiter=delimiter) if r]
        except csv.Error:
            continue
        records = records[:50]
        if not records:
            continue
        counts: dict[int, int] = {}
        for record in records:
            counts[len(record)] = counts.get(len(record), 0) + 1
        width, hits = max(counts.items(), key=lambda item: (item[1], item[0]))
        if width < 2:
            continue
        score = (hits / len(records), min(width, 100))
        if score > best_score:
            best, best_score = delimiter, score
    return best


# ---------------------------------------------------------------- readers


def read_csv(path: Path) -> Table:
    encoding = detect_encoding(path)
    try:
        with open_text(path, encoding) as f:
            sample = f.read(SNIFF_BYTES)
    except UnicodeDecodeError as exc:
        raise _not_valid_encoding(encoding, exc) from None
    if not sample.strip():
        raise TableError("The file is empty. Upload a CSV with a header row and at least one data row.")
    delimiter = detect_delimiter(sample)
    notes = []
    if encoding == MIXED_ENCODING:
        notes.append(
            "The file mixes UTF-8 and Windows-1252 text (typical of files pasted together from several exports); "
            "each part was read in its own encoding. Check accented letters in the preview."
        )

    def rows() -> Iterator[tuple[int, list[str]]]:
        with open_text(path, encoding) as f:
            reader = csv.reader(f, delimiter=delimiter, strict=False)
            previous_end = 0
            try:
                for record in reader:
                    yield previous_end + 1, record
                    previous_end = reader.line_num
            except csv.Error as exc:
                line = previous_end + 1
                if "field larger than field limit" in str(exc):
                    raise TableError(
                        f"The record starting on line {line:,} has a cell longer than {MAX_CELL_CHARS // (1024 * 1024)} MB "
                        "(or a quote that is never closed). Split very long texts into several rows."
                    ) from None
                raise TableError(
                    f"Line {line:,} could not be read as CSV ({exc}). Check that quotes are closed and the file is a plain CSV export."
                ) from None
            except UnicodeDecodeError as exc:
                raise _not_valid_encoding(encoding, exc, previous_end) from None

    return Table(format="csv", header=[], rows=rows(), encoding=encoding, delimiter=delimiter, notes=notes)


def excel_cell(value) -> str:
    """One spreadsheet value as the text a CSV export would hold."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if hasattr(value, "isoformat"):
        text = value.isoformat()
        return text[:-9] if text.endswith("T00:00:00") else text
    return str(value)


def _json_cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return json.dumps(value)
    return json.dumps(value, ensure_ascii=False)


def _too_deep(number: int) -> TableError:
    return TableError(
        f"Line {number:,} nests its values too deeply (lists or objects inside each other hundreds of times deep). "
        'Each line of a .jsonl file should be one flat object, like {"question": "...", "answer": "..."}.'
    )


def read_jsonl(path: Path) -> Table:
    """JSON Lines: one object per line; the columns are every key seen, in order of appearance."""
    encoding = detect_encoding(path)
    if encoding not in ("utf-8", "utf-8-sig"):
        encoding = encoding if encoding.startswith("utf-16") else MIXED_ENCODING

    def objects() -> Iterator[tuple[int, dict]]:
        number = 0
        try:
            yield from parse(number)
        except UnicodeDecodeError as exc:
            raise _not_valid_encoding(encoding, exc) from None

    def parse(number: int) -> Iterator[tuple[int, dict]]:
        with open_text(path, encoding) as f:
            for number, line in enumerate(f, start=1):
                line = line.strip()
                if not line:
                    continue
                try:
                    value = json.loads(line)
                except RecursionError:
                    raise _too_deep(number) from None
                except ValueError as exc:
                    raise TableError(
                        f"Line {number:,} is not valid JSON ({exc.args[0].split(':')[0]}). Each line of a .jsonl file must "
                        'be one JSON object, like {"question": "...", "answer": "..."}.'
                    ) from None
                if not isinstance(value, dict):
                    raise TableError(
                        f"Line {number:,} is a JSON {type(value).__name__.replace('dict', 'object')}, not an object. Each line of a "
                        '.jsonl file must be one object, like {"question": "...", "answer": "..."}.'
                    )
                yield number, value

    keys: dict[str, None] = {}
    for _, obj in objects():
        for key in obj:
            if key not in keys:
                keys[key] = None
                if len(keys) > MAX_COLUMNS:
                    raise TableError(
                        f"The objects have more than {MAX_COLUMNS:,} different keys; Tailor reads at most {MAX_COLUMNS:,} columns."
                    )
    header = list(keys)

    def rows() -> Iterator[tuple[int, list[str]]]:
        yield 0, header
        for number, obj in objects():
            try:
                yield number, [_json_cell(obj.get(key)) for key in header]
            except RecursionError:  # written back as JSON text, a value nested near the limit can still overflow
                raise _too_deep(number) from None

    return Table(format="jsonl", header=[], rows=rows(), encoding=encoding.replace("utf-8-sig", "utf-8"), delimiter="")


def open_table(path: Path, filename: str, sheet: str | None = None) -> Table:
    kind = detect_format(path, filename)
    if kind == "xlsx":
        from app.services.xlsx_reader import read_xlsx  # it builds on this module's Table and TableError

        return read_xlsx(path, sheet)
    if sheet:
        raise TableError("A sheet can only be chosen for an Excel (.xlsx) file. Leave the sheet field empty for CSV and JSON Lines.")
    if kind == "jsonl":
        return read_jsonl(path)
    return read_csv(path)


# ---------------------------------------------------------------- showing cells back to people

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"^[+-]?(\d+([.,]\d*)?|[.,]\d+)([eE][+-]?\d+)?%?$")


def neutralise_formula(value: str) -> str:
    """Prefix a cell that a spreadsheet would run as a formula with an apostrophe (CSV injection)."""
    if value and value.startswith(_FORMULA_START) and not _PLAIN_NUMBER.match(value):
        return "'" + value
    return value
