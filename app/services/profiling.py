"""A dataset's profile, computed in the same streaming pass that stores it: per-column type guess,
empties, lengths, frequent values, personal data, and exact / near-duplicate rows (duplicate_rows).
Rows come in batches from the general reader; the compiled scanner feeds the same builder through
profile_cells.CellsFeed.

Memory stays flat in the file size: per-column state is bounded, and row hashes for the duplicate
count are spilled into bucket files on disk and counted one bucket at a time.
"""

from __future__ import annotations

import re
import tempfile
from bisect import bisect_right
from collections import Counter
from itertools import accumulate, compress
from pathlib import Path
from typing import Any

from app.services import pii
from app.services.duplicate_rows import EXAMPLES, MIX, HashBuckets, near_duplicate_keys

PROFILE_VERSION = 1
MAX_TRACKED_VALUES = 1000  # distinct values counted per column before it counts as free text
TOP_VALUES = 50
TYPE_SAMPLE_ROWS = 20_000  # every row up to here, then every 50th, feeds the type guess
BATCH_ROWS = 1024

_INTEGER = re.compile(r"^[+-]?\d{1,18}$")
_NUMBER = re.compile(r"^[+-]?(\d+([.,]\d*)?|[.,]\d+)([eE][+-]?\d+)?%?$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$|^\d{1,2}[./]\d{1,2}[./]\d{2,4}$")
_BOOLEAN = {"true", "false", "yes", "no", "y", "n", "0", "1", "t", "f"}


def personal_data_cells(column: tuple[str, ...], lengths: list[int]):
    """Positions of the cells that may hold personal data: those pii.may_hold_personal_data accepts
    (an @ or two digits in a row). Most text columns hold few digits, so the cells holding any are
    found by searching the whole column at once; in a column of plain numbers (ids, counts) only
    runs long enough for a card number, or phone numbers starting with 0, can match."""
    joined = "".join(column)
    if joined.isascii() and joined.isdigit():
        return [i for i, cell in enumerate(column) if len(cell) >= 13 or (len(cell) >= 7 and cell[0] == "0")]
    marks = [mark for mark in "@0123456789" if mark in joined]
    if not marks:
        return []
    ends = list(accumulate(lengths))  # cell i ends before ends[i]
    found: set[int] = set()
    enough = len(column) // 4 + 16  # past this, asking every cell is quicker
    for mark in marks:
        position = joined.find(mark)
        while position >= 0:
            cell = bisect_right(ends, position)
            found.add(cell)
            if len(found) > enough:
                return compress(range(len(column)), map(pii.may_hold_personal_data, column))
            position = joined.find(mark, ends[cell])
    return [i for i in sorted(found) if pii.may_hold_personal_data(column[i])]


class ProfileBuilder:
    """Feed rows with add(); finish() returns the profile as plain JSON-able data."""

    def __init__(self, columns: list[str], work_dir: Path | None = None):
        self.columns = columns
        n = len(columns)
        self.rows = 0
        self.empty = [0] * n
        self.total_chars = [0] * n
        self.max_chars = [0] * n
        self.values: list[Counter | None] = [Counter() for _ in range(n)]
        self.type_votes = [{"integer": 0, "number": 0, "boolean": 0, "date": 0, "text": 0} for _ in range(n)]
        self.pii_counts: list[dict[str, int]] = [{} for _ in range(n)]
        self.pii_examples: list[dict[str, list]] = [{} for _ in range(n)]
        self._tmp = tempfile.TemporaryDirectory(prefix="tailor-profile-", dir=work_dir)
        self.exact = HashBuckets(Path(self._tmp.name) / "exact")
        self.near = HashBuckets(Path(self._tmp.name) / "near")
        self.exact.directory.mkdir()
        self.near.directory.mkdir()
        self._batch: list[list[str]] = []
        self._batch_start = 1

    def add(self, row_number: int, cells: list[str]) -> None:
        """Add one row (rows are numbered 1, 2, 3, ... in order); the work happens per batch."""
        if not self._batch:
            self._batch_start = row_number
        self._batch.append(cells)
        if len(self._batch) >= BATCH_ROWS:
            self._flush()

    def add_rows(self, first_row: int, rows: list[list[str]]) -> None:
        """Add consecutive rows numbered from first_row on, in the same batches as add() would."""
        position = 0
        while position < len(rows):
            if not self._batch:
                self._batch_start = first_row + position
            take = BATCH_ROWS - len(self._batch)
            self._batch.extend(rows[position : position + take])
            position += take
            if len(self._batch) >= BATCH_ROWS:
                self._flush()

    def _flush(self) -> None:
        """Profile a batch column by column, so the loops run inside C builtins (map, Counter,
        join, one regex scan per column) instead of once per cell in Python."""
        import numpy as np

        rows, start = self._batch, self._batch_start
        self._batch = []
        if not rows:
            return
        width = len(self.columns)
        rows = [r if len(r) == width else (list(r) + [""] * width)[:width] for r in rows]
        sampled_before = self.rows
        self.rows += len(rows)
        near = np.zeros(len(rows), np.uint64)  # rows alike once case, punctuation and spacing are ignored, cell by cell
        for index, column in enumerate(zip(*rows)):
            near = (near ^ np.fromiter(map(hash, near_duplicate_keys(column)), np.int64, len(rows)).view(np.uint64)) * np.uint64(MIX)
            lengths = list(map(len, column))
            self.empty[index] += column.count("") + sum(map(str.isspace, column))
            self.total_chars[index] += sum(lengths)
            longest = max(lengths)
            if longest > self.max_chars[index]:
                self.max_chars[index] = longest
            counter = self.values[index]
            if counter is not None:
                if longest > 200:
                    self.values[index] = None
                else:
                    counter.update(column)
                    counter.pop("", None)
                    if len(counter) > MAX_TRACKED_VALUES:
                        self.values[index] = None
            self._vote_types(index, column if sampled_before < TYPE_SAMPLE_ROWS else column[::50])
            if self.skips_personal_data(index, longest):
                continue
            for position in personal_data_cells(column, lengths):
                cell = column[position]
                spans = pii.find_personal_data(cell)
                if spans:
                    self._record_pii(index, start + position, cell, spans)
        self.exact.add_array(np.fromiter(map(hash, map(tuple, rows)), np.int64, len(rows)), start)
        self.near.add_array(near.view(np.int64), start)

    def skips_personal_data(self, index: int, longest: int, votes: dict[str, int] | None = None) -> bool:
        """A batch (or block) of a column is not scanned for personal data: its longest cell is under
        6 characters, or the column is one of dates (by the type votes so far, or the given ones)."""
        votes = self.type_votes[index] if votes is None else votes
        return longest < 6 or (votes["date"] >= 100 and self._guess_type(index, votes) == "date")

    def scan_cell(self, index: int, row: int, text: str) -> None:
        spans = pii.find_personal_data(text)
        if spans:
            self._record_pii(index, row, text, spans)

    def _record_pii(self, index: int, row: int, cell: str, spans: list[tuple[str, int, int]]) -> None:
        counts = self.pii_counts[index]
        examples = self.pii_examples[index]
        for kind, begin, end in spans:
            counts[kind] = counts.get(kind, 0) + 1
            found = examples.setdefault(kind, [])
            if len(found) < EXAMPLES:
                found.append({"row": row, "value": pii.redact_example(cell[begin:end])})

    def _vote_types(self, index: int, sample) -> None:
        votes = self.type_votes[index]
        for cell in sample:
            self.vote_cell(votes, cell)

    @staticmethod
    def vote_cell(votes: dict[str, int], cell: str) -> None:
        """Add one cell's type vote (none for a blank cell): "0" and "1" vote integer and boolean."""
        value = cell.strip()
        if not value:
            return
        if value[0].isalpha():  # a letter first: no number or date pattern can match
            votes["boolean" if value.lower() in _BOOLEAN else "text"] += 1
        elif _INTEGER.match(value):
            votes["integer"] += 1
            if value in ("0", "1"):
                votes["boolean"] += 1
        elif _NUMBER.match(value):
            votes["number"] += 1
        elif value.lower() in _BOOLEAN:
            votes["boolean"] += 1
        elif _DATE.match(value):
            votes["date"] += 1
        else:
            votes["text"] += 1

    def _guess_type(self, index: int, votes: dict[str, int] | None = None) -> str:
        votes = self.type_votes[index] if votes is None else votes
        seen = sum(v for k, v in votes.items() if k != "boolean") or 0
        if self.empty[index] == self.rows:
            return "empty"
        if seen == 0:
            return "text"
        values = self.values[index]
        if values is not None and len(values) <= 2 and votes["boolean"] >= seen:
            return "boolean"
        if votes["integer"] == seen:
            return "integer"
        if votes["integer"] + votes["number"] == seen:
            return "number"
        if votes["date"] == seen:
            return "date"
        if values is not None and len(values) <= max(20, self.rows // 20) and self.rows >= 2 * len(values):
            return "category"
        return "text"

    def finish(self) -> dict[str, Any]:
        self._flush()
        for counter in self.values:
            if counter is not None:
                for blank in [value for value in counter if value.isspace()]:
                    del counter[blank]
        try:
            exact, exact_examples, exact_rows = self.exact.duplicates()
            near_all, near_examples, _ = self.near.duplicates(exclude=exact_rows)
        finally:
            self._tmp.cleanup()
        near_only = max(0, near_all - exact)
        columns = []
        # The profile lives in one JSON column: a wide table keeps fewer frequent values per column.
        top_n = TOP_VALUES if len(self.columns) <= 20 else 5
        for index, name in enumerate(self.columns):
            filled = self.rows - self.empty[index]
            values = self.values[index]
            top = sorted(values.items(), key=lambda kv: (-kv[1], kv[0]))[:top_n] if values is not None else None
            columns.append(
                {
                    "name": name,
                    "type": self._guess_type(index),
                    "empty": self.empty[index],
                    "filled": filled,
                    "mean_chars": round(self.total_chars[index] / filled, 1) if filled else 0,
                    "max_chars": self.max_chars[index],
                    "distinct": len(values) if values is not None else None,  # None: more than MAX_TRACKED_VALUES
                    "top_values": [[value[:100], count] for value, count in top] if top is not None else None,
                    "personal_data": {
                        kind: {"count": count, "label": pii.KINDS[kind], "examples": self.pii_examples[index][kind]}
                        for kind, count in sorted(self.pii_counts[index].items())
                    },
                }
            )
        return {
            "version": PROFILE_VERSION,
            "row_count": self.rows,
            "columns": columns,
            "duplicates": {
                "exact": exact,
                "exact_examples": [{"row": r, "same_as": s} for r, s in exact_examples],
                "near": near_only,
                "near_examples": [{"row": r, "same_as": s} for r, s in near_examples],
            },
            "personal_data_total": sum(sum(c.values()) for c in self.pii_counts),
        }

    def close(self) -> None:
        self._tmp.cleanup()
