"""Exact and near-duplicate rows, counted with flat memory: row hashes are spilled into bucket
files on disk by hash prefix and counted one bucket at a time. numpy is imported where it is used:
the web process starts without it."""

from __future__ import annotations

import string
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

EXAMPLES = 3  # example rows kept per finding
BUCKETS = 64
SPILL_ROWS = 256 * 1024  # (hash, row) pairs held in memory before they go to the bucket files
CHUNK_PAIRS = 256 * 1024  # (hash, row) pairs of one bucket counted at a time (4 MB; ~25 MB while counted)
REPEATED_ROWS_KEPT = 100_000  # exact-duplicate rows remembered to keep them out of the near examples

# Bytes, not str: bytes.translate and bytes.lower run at memory speed (str.translate looks every
# character up in a dict). ASCII punctuation and white space dropped, ASCII letters lower-cased.
_NEAR_DELETE = (string.punctuation + string.whitespace).encode()
_ASCII_LOWER = bytes.maketrans(string.ascii_uppercase.encode(), string.ascii_lowercase.encode())  # bytes.lower() in the same pass


def near_duplicate_key(text: str) -> bytes:
    """The text as compared for near-duplicates: case, punctuation and spacing ignored."""
    return text.encode("utf-8", "surrogatepass").translate(None, _NEAR_DELETE).lower()


def near_duplicate_keys(cells: tuple[str, ...]) -> list[bytes]:
    """near_duplicate_key of each cell, encoded, translated and lower-cased as one string (three
    C calls instead of three per cell)."""
    text = "\x00".join(cells)
    keys = text.encode("utf-8", "surrogatepass").translate(_ASCII_LOWER, _NEAR_DELETE).split(b"\x00")
    if len(keys) != len(cells):  # a cell holds a NUL character itself (JSON Lines, UTF-16 text)
        return [near_duplicate_key(cell) for cell in cells]
    return keys


MIX = 0x100000001B3  # FNV-1a's prime: folds the hashes of a row's cells into the row's


class HashBuckets:
    """(hash, row) pairs spilled to disk by hash prefix, so counting needs one bucket in memory."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.pending: list[np.ndarray] = []
        self.pending_rows = 0
        self.spilled = False

    def add_array(self, values: np.ndarray, first_row: int) -> None:
        """Hashes of consecutive rows from first_row on."""
        import numpy as np

        pairs = np.empty((len(values), 2), np.int64)
        pairs[:, 0] = values
        pairs[:, 1] = np.arange(first_row, first_row + len(values))
        self.pending.append(pairs)
        self.pending_rows += len(values)
        if self.pending_rows >= SPILL_ROWS:
            self._spill()

    def _spill(self) -> None:
        import numpy as np

        if not self.pending:
            return
        pairs = np.concatenate(self.pending)
        self.pending, self.pending_rows, self.spilled = [], 0, True
        buckets = (pairs[:, 0] & (BUCKETS - 1)).astype(np.uint8)
        pairs = pairs[np.argsort(buckets, kind="stable")]  # a radix sort for bytes; stable: rows stay in order within a bucket
        ends = np.cumsum(np.bincount(buckets, minlength=BUCKETS))
        start = 0
        for bucket, end in enumerate(ends):
            if end > start:
                with open(self.directory / f"b{bucket}", "ab") as f:
                    f.write(pairs[start:end].tobytes())
            start = end

    def _buckets(self):
        """Each bucket as an iterator of chunks of (hash, row) pairs in ascending row order (spills
        append in row order, and sort stably within a spill), at most CHUNK_PAIRS at a time: a
        file of one row repeated millions of times fills a single bucket."""
        import numpy as np

        if not self.spilled:
            yield iter([np.concatenate(self.pending) if self.pending else np.empty((0, 2), np.int64)])
            return
        self._spill()
        for bucket in range(BUCKETS):
            path = self.directory / f"b{bucket}"
            if path.exists():
                yield _chunks_of(path)

    def duplicates(self, exclude: np.ndarray | None = None) -> tuple[int, list[tuple[int, int]], np.ndarray]:
        """(number of rows repeating an earlier row, the EXAMPLES first such (row, first row) pairs
        whose row is not in exclude, the first REPEATED_ROWS_KEPT repeating rows, sorted).

        Memory: one chunk plus, per bucket, the first row of each distinct hash seen so far."""
        import numpy as np

        count = 0
        examples = np.empty((0, 2), np.int64)
        repeated = np.empty(0, np.int64)
        for chunks in self._buckets():
            seen_values, seen_rows = np.empty(0, np.int64), np.empty(0, np.int64)  # sorted by value
            for pairs in chunks:
                if not len(pairs):
                    continue
                ordered = pairs[np.argsort(pairs[:, 0])]  # grouped by hash (rows in any order within a group)
                values, rows = ordered[:, 0], ordered[:, 1]
                first = np.empty(len(values), bool)
                first[0] = True
                np.not_equal(values[1:], values[:-1], out=first[1:])
                group = np.cumsum(first) - 1
                group_values, group_rows = values[first], np.minimum.reduceat(rows, np.flatnonzero(first))  # each hash's first row
                # A hash met in an earlier chunk: its first row is from there, and every row here repeats it.
                at = np.minimum(np.searchsorted(seen_values, group_values), max(len(seen_values) - 1, 0))
                known = seen_values[at] == group_values if len(seen_values) else np.zeros(len(group_values), bool)
                origin = np.where(known, seen_rows[at] if len(seen_values) else 0, group_rows)
                repeats = (rows != group_rows[group]) | known[group]
                again, again_same = rows[repeats], origin[group][repeats]
                count += len(again)
                shown = again if exclude is None else again[~np.isin(again, exclude)]
                shown_same = again_same if exclude is None else again_same[~np.isin(again, exclude)]
                pick = np.argsort(shown)[:EXAMPLES]
                examples = np.concatenate([examples, np.stack([shown[pick], shown_same[pick]], axis=1)])
                examples = examples[np.argsort(examples[:, 0])[:EXAMPLES]]
                repeated = np.concatenate([repeated, again])
                if len(repeated) > REPEATED_ROWS_KEPT:
                    repeated = np.partition(repeated, REPEATED_ROWS_KEPT - 1)[:REPEATED_ROWS_KEPT]
                if (~known).any():
                    merged_values = np.concatenate([seen_values, group_values[~known]])
                    order = np.argsort(merged_values)  # distinct values
                    seen_values, seen_rows = merged_values[order], np.concatenate([seen_rows, group_rows[~known]])[order]
        return count, [(int(r), int(s)) for r, s in examples], np.sort(repeated)


def _chunks_of(path: Path):
    import numpy as np

    with open(path, "rb") as f:
        while len(chunk := np.fromfile(f, np.int64, count=2 * CHUNK_PAIRS)):
            yield chunk.reshape(-1, 2)
