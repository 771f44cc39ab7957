"""The fast path for the most common upload: a UTF-8, comma-delimited CSV whose header needs no
cleaning. One compiled pass (csv_scan) reads every record, feeds the profile and the content hash,
and notes the row index; the file itself is stored as it is.

Anything else returns None and goes through the general reader (tabular_formats and
dataset_normalise.write_normalised), which gives the same dataset and profile for every file this path
accepts, and explains or repairs the files it does not."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from app.services.profile_cells import CellsFeed
from app.services.profiling import ProfileBuilder
from app.services.tabular_formats import SNIFF_BYTES, TableError, detect_delimiter, detect_format, encoding_of_head

ROW_INDEX_EVERY = 1000  # a row index notes where every this-many-th record starts (datasets uses it too)

log = logging.getLogger(__name__)


@dataclass
class PlainScan:
    rows: int
    profile: dict
    sha256: str
    last_row: list[str]
    row_index: list[int] = field(default_factory=list)  # byte offset of every ROW_INDEX_EVERY-th record


def plain_header(path: Path, filename: str) -> list[str] | None:
    """The header of a file the fast path can take (UTF-8 without BOM, comma-delimited, the header
    on one line), judged from its first bytes as the general reader judges them; else None."""
    with open(path, "rb") as f:
        head = f.read(4 * SNIFF_BYTES)
    try:
        if detect_format(path, filename) != "csv" or encoding_of_head(head[:SNIFF_BYTES]) != "utf-8":
            return None
    except TableError:
        return None  # the general reader refuses it, and says why
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 3:
            return None
        text = head[: exc.start].decode("utf-8")  # the read ended inside a character
    if len(text) < SNIFF_BYTES and len(head) == 4 * SNIFF_BYTES:
        return None
    sample = text[:SNIFF_BYTES]
    if "\n" not in sample or detect_delimiter(sample) != ",":
        return None
    first_line = sample[: sample.index("\n") + 1]
    if first_line.count('"') % 2:
        return None  # a quoted header cell spans lines
    return next(csv.reader([first_line]), None)


def _has_blank_record(cells) -> bool:
    """A record whose cells are all empty or white space (as dataset_normalise.is_blank sees it)."""
    import numpy as np

    from app.services.csv_cell_flags import SPACE_ONLY

    for row in np.flatnonzero(((cells.flags & SPACE_ONLY) != 0).all(axis=1)).tolist():
        if not "".join(cells.text(row, column) for column in range(cells.flags.shape[1])).strip():
            return True
    return False


def scan_plain_csv(path: Path, columns: list[str], work_dir: Path | None = None) -> PlainScan | None:
    """Profile every record after the header and hash the whole file in one pass; None when the
    file turns out to need the general reader (see csv_scan.Unusual)."""
    from app.services.csv_scan import Unusual, scan_file

    builder = ProfileBuilder(columns, work_dir)
    feed = CellsFeed(builder)
    digest = hashlib.sha256()
    rows = 0
    row_index: list[int] = []
    last_row: list[str] = []
    try:
        for cells in scan_file(path, len(columns), digest=digest):
            if _has_blank_record(cells):
                return None  # the general reader leaves it out, and so rewrites the file
            for record in range(-rows % ROW_INDEX_EVERY, cells.rows, ROW_INDEX_EVERY):
                row_index.append(cells.base + int(cells.starts[record, 0]))
            feed.add(cells)
            rows += cells.rows
            last_row = [cells.text(cells.rows - 1, column) for column in range(len(columns))]
        feed.close()
        profile = builder.finish()
    except Unusual:
        return None
    finally:
        builder.close()
    return PlainScan(rows=rows, profile=profile, sha256=digest.hexdigest(), last_row=last_row, row_index=row_index)


class ScannerProcess:
    """A child Python process (`python -m app.services.plain_csv`) that loads the compiled scanner
    as soon as it starts, then scans the one file it is given. The web process neither loads the
    compiler nor holds its interpreter lock for the profile's Python parts, and gets the scan's
    memory back when the child ends. Started when a large upload begins, the child is ready by the
    time the upload is on disk."""

    def __init__(self):
        self.process: subprocess.Popen | None = None
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "app.services.plain_csv"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        except OSError as exc:
            log.warning("the CSV scanner could not start (%s); reading with the general reader", exc)

    def scan(self, path: Path, columns: list[str], work_dir: Path | None = None) -> PlainScan | None:
        """scan_plain_csv, in the child; None when it declines or fails."""
        if self.process is None:
            return None
        request = json.dumps({"path": str(path), "columns": columns, "work_dir": str(work_dir) if work_dir else None})
        try:
            output, errors = self.process.communicate(request)
        except OSError as exc:  # the child is gone already
            log.warning("the CSV scanner stopped (%s); reading with the general reader", exc)
            return None
        if self.process.returncode != 0:
            log.warning(
                "the CSV scanner stopped with exit code %s; reading with the general reader: %s",
                self.process.returncode,
                errors.strip()[-2000:],
            )
            return None
        result = json.loads(output)
        return PlainScan(**result) if result is not None else None

    def __enter__(self) -> ScannerProcess:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """End the child if it is still waiting (the upload was not a plain CSV after all)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def _main() -> None:
    """The child process of ScannerProcess: load the scanner, then read the request (path,
    columns, work_dir) as JSON on stdin and write the PlainScan (or null) as JSON on stdout."""
    warm_up()
    request = json.loads(sys.stdin.read() or "null")
    if request is None:
        return
    work_dir = Path(request["work_dir"]) if request["work_dir"] else None
    scanned = scan_plain_csv(Path(request["path"]), request["columns"], work_dir)
    sys.stdout.write(json.dumps(dataclasses.asdict(scanned) if scanned is not None else None))


def warm_up() -> None:
    """Compile the scanner now (or load it from numba's cache), not at the first upload:
    scripts/setup and the Docker image call this once after installing."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="tailor-warm-") as directory:
        path = Path(directory) / "warm.csv"
        path.write_text('question,answer\nhello,"a, b"\n', encoding="utf-8")
        if scan_plain_csv(path, ["question", "answer"], Path(directory)) is None:
            raise RuntimeError("the CSV scanner failed on its warm-up file")


if __name__ == "__main__":
    _main()
