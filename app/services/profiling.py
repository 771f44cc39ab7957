"""A dataset's profile, computed in the same streaming pass that stores it: per-column type guess,
empties, lengths, frequent values, personal data, and exact / near-duplicate rows.

Memory stays flat in the file size: per-column state is bounded, and row hashes for the duplicate
count are spilled into bucket files on disk and counted one bucket at a time.
"""

from __future__ import annotations

import re
import string
import tempfile
from bisect import bisect_right
from collections import Counter
from functools import cache
from itertools import accumulate, compress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.services import pii

if TYPE_CHECKING:
    import numpy as np

    from app.services.csv_scan import Cells

PROFILE_VERSION = 1
MAX_TRACKED_VALUES = 1000  # distinct values counted per column before it counts as free text
TOP_VALUES = 50
TYPE_SAMPLE_ROWS = 20_000  # every row up to here, then every 50th, feeds the type guess
EXAMPLES = 3
BATCH_ROWS = 1024
BUCKETS = 64
SPILL_ROWS = 256 * 1024  # (hash, row) pairs held in memory before they go to the bucket files
CHUNK_PAIRS = 256 * 1024  # (hash, row) pairs of one bucket counted at a time (4 MB; ~25 MB while counted)
REPEATED_ROWS_KEPT = 100_000  # exact-duplicate rows remembered to keep them out of the near examples

_INTEGER = re.compile(r"^[+-]?\d{1,18}$")
_NUMBER = re.compile(r"^[+-]?(\d+([.,]\d*)?|[.,]\d+)([eE][+-]?\d+)?%?$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$|^\d{1,2}[./]\d{1,2}[./]\d{2,4}$")
_BOOLEAN = {"true", "false", "yes", "no", "y", "n", "0", "1", "t", "f"}
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


_MIX = 0x100000001B3  # FNV-1a's prime: folds the hashes of a row's cells into the row's


class _HashBuckets:
    """(hash, row) pairs spilled to disk by hash prefix, so counting needs one bucket in memory.
    numpy is imported where it is used: the web process starts without it."""

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


@cache
def _ascii_tables():
    """numpy lookup tables, byte -> is an ASCII letter, is an ASCII digit."""
    import numpy as np

    letter, digit = np.zeros(256, bool), np.zeros(256, bool)
    letter[list(string.ascii_letters.encode())] = True
    digit[list(string.digits.encode())] = True
    return letter, digit


def _long_digits(flags, chars):
    """Cells of ASCII digits long enough for a card number, or of 7 or more starting with 0."""
    from app.services import csv_scan

    return ((flags & csv_scan.ALL_DIGITS) != 0) & ((chars >= 13) | ((chars >= 7) & ((flags & csv_scan.FIRST_ZERO) != 0)))


def _marked(flags):
    """(positions of the cells that may hold personal data, whether each surely may): an @ or two
    ASCII digits in a row surely; a digit among non-ASCII characters maybe (two digits in a row of
    any script, which pii.may_hold_personal_data decides)."""
    import numpy as np

    from app.services import csv_scan

    has_digit = (flags & csv_scan.DIGIT) != 0
    sure = ((flags & csv_scan.AT_SIGN) != 0) | (has_digit & ((flags & csv_scan.DIGIT_PAIR) != 0))
    maybe = has_digit & ((flags & (csv_scan.DIGIT_PAIR | csv_scan.NON_ASCII)) == csv_scan.NON_ASCII)
    return np.flatnonzero(sure | maybe), sure


# A type vote, by what it counts: "0" and "1" count as integers and as booleans.
_VOTES = (("integer",), ("integer", "boolean"), ("number",), ("boolean",), ("date",), ("text",))


class _OpenBlock:
    """What add_cells keeps of one column's block of BATCH_ROWS rows until its last row arrives."""

    def __init__(self):
        self.longest = 0
        self.all_digits = True  # every cell ASCII digits or empty
        self.any_digits = False
        self.parts: list[tuple[Cells, int]] = []  # copies of its rows in earlier cells, with the row number of each's first


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
        self.exact = _HashBuckets(Path(self._tmp.name) / "exact")
        self.near = _HashBuckets(Path(self._tmp.name) / "near")
        self.exact.directory.mkdir()
        self.near.directory.mkdir()
        self._batch: list[list[str]] = []
        self._batch_start = 1
        self._value_texts: list[dict[int, str]] = [{} for _ in range(n)]  # add_cells: a tracked value's hash -> its text
        self._open_blocks: dict[int, _OpenBlock] = {}  # add_cells: per column, the block the last cells ended inside

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
            self._batch.extend(rows[position:position + take])
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
            near = (near ^ np.fromiter(map(hash, near_duplicate_keys(column)), np.int64, len(rows)).view(np.uint64)) * np.uint64(_MIX)
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
            if self._skips_personal_data(index, longest):
                continue
            for position in personal_data_cells(column, lengths):
                cell = column[position]
                spans = pii.find_personal_data(cell)
                if spans:
                    self._record_pii(index, start + position, cell, spans)
        self.exact.add_array(np.fromiter(map(hash, map(tuple, rows)), np.int64, len(rows)), start)
        self.near.add_array(near.view(np.int64), start)

    def add_cells(self, cells: Cells) -> None:
        """Add the next cells.rows rows as the compiled CSV scanner describes them (csv_scan.Cells).
        The profile comes out as add() would make it: the per-block rules (type votes sampled
        per block of BATCH_ROWS rows, the personal-data scan skipped for date columns and
        narrowed for digit columns) are applied to the same blocks of rows, column-wise."""
        import numpy as np

        from app.services import csv_scan

        n = cells.rows
        if not n:
            return
        first = self.rows  # rows before these (the 0-based index of the first)
        self.rows += n
        mix = np.uint64(_MIX)
        exact = np.zeros(n, np.uint64)
        near = np.zeros(n, np.uint64)
        absolute = np.arange(first, first + n)
        block_of = absolute // BATCH_ROWS
        block_first = block_of * BATCH_ROWS
        sampled = np.flatnonzero((block_first < TYPE_SAMPLE_ROWS) | ((absolute - block_first) % 50 == 0))
        # Where each block (or the part of it in these rows) begins, and whether it ends here.
        bounds = np.flatnonzero(np.diff(block_of, prepend=-1))
        ends = np.append(bounds[1:], n)
        closes = (block_first[bounds] + BATCH_ROWS) <= first + n
        for index in range(len(self.columns)):
            exact = (exact ^ cells.exact[:, index]) * mix
            near = (near ^ cells.near[:, index]) * mix
            flags, chars = cells.flags[:, index], cells.chars[:, index]
            blank = (flags & csv_scan.SPACE_ONLY) != 0
            for i in np.flatnonzero(blank & ((flags & csv_scan.NON_ASCII) != 0)).tolist():  # non-ASCII: is it white space?
                blank[i] = cells.text(i, index).isspace()
            self.empty[index] += int(blank.sum())
            self.total_chars[index] += int(chars.sum())
            self.max_chars[index] = max(self.max_chars[index], int(chars.max()))
            self._count_values(index, cells, flags, chars)
            votes_before = dict(self.type_votes[index])
            codes = self._vote_codes(cells, index, sampled)
            # Votes after each block part: the date rule for a block uses the votes up to its end.
            per_part = np.zeros((len(bounds), len(_VOTES)), np.int64)
            voting = codes >= 0
            np.add.at(per_part, (np.searchsorted(bounds, sampled[voting], side="right") - 1, codes[voting]), 1)
            after = np.cumsum(per_part, axis=0)
            for kind, total in zip(_VOTES, after[-1].tolist()):
                for name in kind:
                    self.type_votes[index][name] += total
            self._personal_data(cells, index, flags, chars, bounds, ends, closes, votes_before, after)
        self.exact.add_array(exact.view(np.int64), first + 1)
        self.near.add_array(near.view(np.int64), first + 1)

    def _count_values(self, index: int, cells: Cells, flags, chars) -> None:
        """Frequent values, counted by the hash of their text; a value's text is read once, when
        first met."""
        import numpy as np

        from app.services import csv_scan

        counter = self.values[index]
        if counter is None:
            return
        if int(chars.max()) > 200:
            self.values[index] = None
            return
        filled = np.flatnonzero((flags & csv_scan.EMPTY) == 0)
        hashes, at, counts = np.unique(cells.exact[filled, index], return_index=True, return_counts=True)
        texts = self._value_texts[index]
        for value_hash, position, count in zip(hashes.tolist(), at.tolist(), counts.tolist()):
            text = texts.get(value_hash)
            if text is None:
                text = texts[value_hash] = cells.text(int(filled[position]), index)
            counter[text] += count
            if len(counter) > MAX_TRACKED_VALUES:
                self.values[index] = None
                self._value_texts[index] = {}
                return

    def _personal_data(self, cells: Cells, index: int, flags, chars, bounds, ends, closes, votes_before, after) -> None:
        """The personal-data scan of each block part in cells, as _flush does it per batch: a
        block whose longest cell is under 6 characters, or of a date column, is skipped; in a
        block of digits only, only runs long enough for a card number (or starting with 0) are
        read; elsewhere the cells pii.may_hold_personal_data accepts."""
        import numpy as np

        from app.services import csv_scan

        digits = (flags & csv_scan.ALL_DIGITS) != 0
        longest = np.maximum.reduceat(chars, bounds).tolist()
        all_digits = np.minimum.reduceat(digits | ((flags & csv_scan.EMPTY) != 0), bounds).tolist()
        any_digits = np.maximum.reduceat(digits, bounds).tolist()
        # The cells each rule would read, over all of cells at once; a block takes its share.
        by_digits = np.flatnonzero(_long_digits(flags, chars))
        by_marks, sure = _marked(flags)
        digit_at = np.searchsorted(by_digits, bounds).tolist() + [len(by_digits)]
        mark_at = np.searchsorted(by_marks, bounds).tolist() + [len(by_marks)]
        first_row = self.rows - cells.rows + 1  # the row number of cells' first row
        for part in range(len(bounds)):
            block = self._open_blocks.pop(index, None) if part == 0 else None
            if block is None:
                block = _OpenBlock()
            block.longest = max(block.longest, longest[part])
            block.all_digits &= bool(all_digits[part])
            block.any_digits |= bool(any_digits[part])
            begin, end = int(bounds[part]), int(ends[part])
            if not closes[part]:  # the block goes on in the next cells: keep a copy of this part
                block.parts.append((cells.snapshot(begin, end), first_row + begin))
                self._open_blocks[index] = block
                continue
            votes = {name: votes_before[name] for name in votes_before}
            for kind, total in zip(_VOTES, after[part].tolist()):
                for name in kind:
                    votes[name] += total
            if self._skips_personal_data(index, block.longest, votes):
                continue
            digits_only = block.all_digits and block.any_digits
            for earlier, earlier_first_row in block.parts:
                self._scan_part(earlier, index, 0, earlier.rows, earlier_first_row, digits_only)
            if digits_only:
                for i in by_digits[digit_at[part]:digit_at[part + 1]].tolist():
                    self._scan_cell(index, first_row + i, cells.text(i, index))
            else:
                for i in by_marks[mark_at[part]:mark_at[part + 1]].tolist():
                    text = cells.text(i, index)
                    if sure[i] or pii.may_hold_personal_data(text):
                        self._scan_cell(index, first_row + i, text)

    def _scan_part(self, cells: Cells, index: int, begin: int, end: int, first_row: int, digits_only: bool) -> None:
        """Scan rows begin..end of cells (row numbers from first_row) for personal data: in a
        block of digits only, the runs long enough for a card number (or starting with 0), else
        the cells pii.may_hold_personal_data accepts (an @ or two digits in a row)."""
        import numpy as np

        flags, chars = cells.flags[begin:end, index], cells.chars[begin:end, index]
        if digits_only:
            for i in np.flatnonzero(_long_digits(flags, chars)).tolist():
                self._scan_cell(index, first_row + i, cells.text(begin + i, index))
            return
        marked, sure = _marked(flags)
        for i in marked.tolist():
            text = cells.text(begin + i, index)
            if sure[i] or pii.may_hold_personal_data(text):
                self._scan_cell(index, first_row + i, text)

    def _skips_personal_data(self, index: int, longest: int, votes: dict[str, int] | None = None) -> bool:
        """A batch (or block) of a column is not scanned for personal data: its longest cell is under
        6 characters, or the column is one of dates (by the type votes so far, or the given ones)."""
        votes = self.type_votes[index] if votes is None else votes
        return longest < 6 or (votes["date"] >= 100 and self._guess_type(index, votes) == "date")

    def _scan_cell(self, index: int, row: int, text: str) -> None:
        spans = pii.find_personal_data(text)
        if spans:
            self._record_pii(index, row, text, spans)

    def _vote_codes(self, cells: Cells, index: int, positions):
        """_vote_types' vote (an index into _VOTES, -1 for none) of each cell at positions; a cell
        is read only when its flags and first bytes do not settle its vote."""
        import numpy as np

        from app.services import csv_scan

        codes = np.full(len(positions), -2, np.int64)  # -2: not settled yet
        if not len(positions):
            return codes
        flags = cells.flags[positions, index]
        chars = cells.chars[positions, index]
        codes[((flags & csv_scan.SPACE_ONLY) != 0) & ((flags & csv_scan.NON_ASCII) == 0)] = -1  # blank: no vote
        codes[((flags & csv_scan.ALL_DIGITS) != 0) & (chars > 1) & (chars <= 18) & (codes == -2)] = _VOTES.index(("integer",))
        quoted = (flags & csv_scan.QUOTED) != 0
        starts = cells.starts[positions, index] + quoted
        lengths = cells.stops[positions, index] - quoted - starts
        heads = cells.data[np.minimum(starts[:, None] + np.arange(10), len(cells.data) - 1)]
        letter, digit = _ascii_tables()
        # An ASCII letter first and a visible ASCII character after the fifth: stripped, it starts with
        # a letter and is longer than any boolean word, so it votes text.
        visible = (heads > 32) & (heads < 127) & (np.arange(10) < lengths[:, None])
        word = letter[heads[:, 0]] & visible[:, 5:].any(axis=1)
        codes[word & (codes == -2)] = _VOTES.index(("text",))
        iso_date = (lengths == 10) & digit[heads[:, [0, 1, 2, 3, 5, 6, 8, 9]]].all(axis=1) & (heads[:, 4] == 45) & (heads[:, 7] == 45)
        codes[iso_date & (codes == -2)] = _VOTES.index(("date",))
        for at in np.flatnonzero(codes == -2).tolist():
            codes[at] = self._vote_code(cells.text(int(positions[at]), index))
        return codes

    def _vote_code(self, cell: str) -> int:
        votes = dict.fromkeys(("integer", "number", "boolean", "date", "text"), 0)
        value = cell.strip()
        if not value:
            return -1
        if value[0].isalpha():
            votes["boolean" if value.lower() in _BOOLEAN else "text"] += 1
        else:
            self._vote_value(votes, value)
        return _VOTES.index(tuple(name for name, count in votes.items() if count))

    def _close_block(self) -> None:
        """The last block, when the rows end inside it: scan its kept parts for personal data
        unless _flush would have skipped the column for it."""
        blocks, self._open_blocks = self._open_blocks, {}
        for index, block in sorted(blocks.items()):
            if self._skips_personal_data(index, block.longest):
                continue
            for part, first_row in block.parts:
                self._scan_part(part, index, 0, part.rows, first_row, block.all_digits and block.any_digits)

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
            value = cell.strip()
            if not value:
                continue
            if value[0].isalpha():  # a letter first: no number or date pattern can match
                votes["boolean" if value.lower() in _BOOLEAN else "text"] += 1
            else:
                self._vote_value(votes, value)

    @staticmethod
    def _vote_value(votes: dict[str, int], value: str) -> None:
        if _INTEGER.match(value):
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
        self._close_block()
        for index, counter in enumerate(self.values):
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
            columns.append({
                "name": name,
                "type": self._guess_type(index),
                "empty": self.empty[index],
                "filled": filled,
                "mean_chars": round(self.total_chars[index] / filled, 1) if filled else 0,
                "max_chars": self.max_chars[index],
                "distinct": len(values) if values is not None else None,  # None: more than MAX_TRACKED_VALUES
                "top_values": [[value[:100], count] for value, count in top] if top is not None else None,
                "personal_data": {kind: {"count": count, "label": pii.KINDS[kind], "examples": self.pii_examples[index][kind]}
                                  for kind, count in sorted(self.pii_counts[index].items())},
            })
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


# ---------------------------------------------------------------- token lengths

def histogram(lengths: list[int], bins: int = 20) -> list[dict[str, int]]:
    """Equal-width bins from 0 to the longest value: [{"start", "end", "count"}]."""
    if not lengths:
        return []
    top = max(lengths)
    width = max(1, -(-(top + 1) // bins))
    counts = [0] * bins
    for value in lengths:
        counts[min(value // width, bins - 1)] += 1
    return [{"start": i * width, "end": (i + 1) * width - 1, "count": c} for i, c in enumerate(counts)]


def percentile(sorted_values: list[int], fraction: float) -> int:
    if not sorted_values:
        return 0
    return sorted_values[min(len(sorted_values) - 1, int(fraction * len(sorted_values)))]


def load_tokenizer(tokenizer_file: Path):
    """A `tokenizers` tokenizer from a model's tokenizer.json (no torch, no transformers)."""
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(tokenizer_file))


def token_length_report(texts_with_rows: list[tuple[int, str]], tokenizer, max_length: int, total_rows: int) -> dict[str, Any]:
    """Token counts of the given texts: histogram, percentiles and rows over max_length."""
    lengths: list[int] = []
    over: list[int] = []
    batch = 512
    for start in range(0, len(texts_with_rows), batch):
        chunk = texts_with_rows[start:start + batch]
        encodings = tokenizer.encode_batch([text for _, text in chunk], add_special_tokens=False)
        for (row, _), encoding in zip(chunk, encodings):
            n = len(encoding.ids)
            lengths.append(n)
            if n > max_length:
                over.append(row)
    ordered = sorted(lengths)
    measured = len(lengths)
    scale = total_rows / measured if measured else 0
    return {
        "measured_rows": measured,
        "total_rows": total_rows,
        "sampled": measured < total_rows,
        "max_length": max_length,
        "mean": round(sum(lengths) / measured, 1) if measured else 0,
        "median": percentile(ordered, 0.5),
        "p95": percentile(ordered, 0.95),
        "max": ordered[-1] if ordered else 0,
        "histogram": histogram(lengths),
        "over_max_length": round(len(over) * scale),
        "over_max_length_rows": over[:20],
    }
