"""The profile's feed from the compiled CSV scanner (csv_scan.Cells: every cell's position, length,
hashes and flags, no Python string unless needed): the same statistics as ProfileBuilder's batches
of rows, worked out column-wise on the scanner's facts, applying the same per-block rules (type
votes sampled per block of BATCH_ROWS rows, the personal-data scan skipped for date columns and
narrowed for digit columns) to the same blocks of rows. It exists only for the scanner's speed and
goes with it."""

from __future__ import annotations

import string
from functools import cache
from typing import TYPE_CHECKING

from app.services import pii, profiling
from app.services.duplicate_rows import MIX
from app.services.profiling import ProfileBuilder

if TYPE_CHECKING:
    from app.services.csv_scan import Cells


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
    from app.services import csv_cell_flags

    return ((flags & csv_cell_flags.ALL_DIGITS) != 0) & ((chars >= 13) | ((chars >= 7) & ((flags & csv_cell_flags.FIRST_ZERO) != 0)))


def _marked(flags):
    """(positions of the cells that may hold personal data, whether each surely may): an @ or two
    ASCII digits in a row surely; a digit among non-ASCII characters maybe (two digits in a row of
    any script, which pii.may_hold_personal_data decides)."""
    import numpy as np

    from app.services import csv_cell_flags

    has_digit = (flags & csv_cell_flags.DIGIT) != 0
    sure = ((flags & csv_cell_flags.AT_SIGN) != 0) | (has_digit & ((flags & csv_cell_flags.DIGIT_PAIR) != 0))
    maybe = has_digit & ((flags & (csv_cell_flags.DIGIT_PAIR | csv_cell_flags.NON_ASCII)) == csv_cell_flags.NON_ASCII)
    return np.flatnonzero(sure | maybe), sure


# A type vote, by what it counts: "0" and "1" count as integers and as booleans.
_VOTES = (("integer",), ("integer", "boolean"), ("number",), ("boolean",), ("date",), ("text",))


class _OpenBlock:
    """What CellsFeed.add keeps of one column's block of BATCH_ROWS rows until its last row arrives."""

    def __init__(self):
        self.longest = 0
        self.all_digits = True  # every cell ASCII digits or empty
        self.any_digits = False
        self.parts: list[tuple[Cells, int]] = []  # copies of its rows in earlier cells, with the row number of each's first


class CellsFeed:
    """Feed a ProfileBuilder from the scanner: add(cells) for each window, close() before finish()."""

    def __init__(self, profile: ProfileBuilder):
        self.profile = profile
        self._value_texts: list[dict[int, str]] = [{} for _ in profile.columns]  # a tracked value's hash -> its text
        self._open_blocks: dict[int, _OpenBlock] = {}  # per column, the block the last cells ended inside

    def add(self, cells: Cells) -> None:
        """Add the next cells.rows rows as the compiled CSV scanner describes them (csv_scan.Cells).
        The profile comes out as add() would make it: the per-block rules (type votes sampled
        per block of BATCH_ROWS rows, the personal-data scan skipped for date columns and
        narrowed for digit columns) are applied to the same blocks of rows, column-wise."""
        import numpy as np

        from app.services import csv_cell_flags

        n = cells.rows
        if not n:
            return
        first = self.profile.rows  # rows before these (the 0-based index of the first)
        self.profile.rows += n
        mix = np.uint64(MIX)
        exact = np.zeros(n, np.uint64)
        near = np.zeros(n, np.uint64)
        absolute = np.arange(first, first + n)
        block_of = absolute // profiling.BATCH_ROWS
        block_first = block_of * profiling.BATCH_ROWS
        sampled = np.flatnonzero((block_first < profiling.TYPE_SAMPLE_ROWS) | ((absolute - block_first) % 50 == 0))
        # Where each block (or the part of it in these rows) begins, and whether it ends here.
        bounds = np.flatnonzero(np.diff(block_of, prepend=-1))
        ends = np.append(bounds[1:], n)
        closes = (block_first[bounds] + profiling.BATCH_ROWS) <= first + n
        for index in range(len(self.profile.columns)):
            exact = (exact ^ cells.exact[:, index]) * mix
            near = (near ^ cells.near[:, index]) * mix
            flags, chars = cells.flags[:, index], cells.chars[:, index]
            blank = (flags & csv_cell_flags.SPACE_ONLY) != 0
            for i in np.flatnonzero(blank & ((flags & csv_cell_flags.NON_ASCII) != 0)).tolist():  # non-ASCII: is it white space?
                blank[i] = cells.text(i, index).isspace()
            self.profile.empty[index] += int(blank.sum())
            self.profile.total_chars[index] += int(chars.sum())
            self.profile.max_chars[index] = max(self.profile.max_chars[index], int(chars.max()))
            self._count_values(index, cells, flags, chars)
            votes_before = dict(self.profile.type_votes[index])
            codes = self._vote_codes(cells, index, sampled)
            # Votes after each block part: the date rule for a block uses the votes up to its end.
            per_part = np.zeros((len(bounds), len(_VOTES)), np.int64)
            voting = codes >= 0
            np.add.at(per_part, (np.searchsorted(bounds, sampled[voting], side="right") - 1, codes[voting]), 1)
            after = np.cumsum(per_part, axis=0)
            for kind, total in zip(_VOTES, after[-1].tolist()):
                for name in kind:
                    self.profile.type_votes[index][name] += total
            self._personal_data(cells, index, flags, chars, bounds, ends, closes, votes_before, after)
        self.profile.exact.add_array(exact.view(np.int64), first + 1)
        self.profile.near.add_array(near.view(np.int64), first + 1)

    def _count_values(self, index: int, cells: Cells, flags, chars) -> None:
        """Frequent values, counted by the hash of their text; a value's text is read once, when
        first met."""
        import numpy as np

        from app.services import csv_cell_flags

        counter = self.profile.values[index]
        if counter is None:
            return
        if int(chars.max()) > 200:
            self.profile.values[index] = None
            return
        filled = np.flatnonzero((flags & csv_cell_flags.EMPTY) == 0)
        hashes, at, counts = np.unique(cells.exact[filled, index], return_index=True, return_counts=True)
        texts = self._value_texts[index]
        for value_hash, position, count in zip(hashes.tolist(), at.tolist(), counts.tolist()):
            text = texts.get(value_hash)
            if text is None:
                text = texts[value_hash] = cells.text(int(filled[position]), index)
            counter[text] += count
            if len(counter) > profiling.MAX_TRACKED_VALUES:
                self.profile.values[index] = None
                self._value_texts[index] = {}
                return

    def _personal_data(self, cells: Cells, index: int, flags, chars, bounds, ends, closes, votes_before, after) -> None:
        """The personal-data scan of each block part in cells, as _flush does it per batch: a
        block whose longest cell is under 6 characters, or of a date column, is skipped; in a
        block of digits only, only runs long enough for a card number (or starting with 0) are
        read; elsewhere the cells pii.may_hold_personal_data accepts."""
        import numpy as np

        from app.services import csv_cell_flags

        digits = (flags & csv_cell_flags.ALL_DIGITS) != 0
        longest = np.maximum.reduceat(chars, bounds).tolist()
        all_digits = np.minimum.reduceat(digits | ((flags & csv_cell_flags.EMPTY) != 0), bounds).tolist()
        any_digits = np.maximum.reduceat(digits, bounds).tolist()
        first_row = self.profile.rows - cells.rows + 1  # the row number of cells' first row
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
            if self.profile.skips_personal_data(index, block.longest, votes):
                continue
            digits_only = block.all_digits and block.any_digits
            for earlier, earlier_first_row in block.parts:
                self._scan_part(earlier, index, 0, earlier.rows, earlier_first_row, digits_only)
            self._scan_part(cells, index, begin, end, first_row + begin, digits_only)

    def _scan_part(self, cells: Cells, index: int, begin: int, end: int, first_row: int, digits_only: bool) -> None:
        """Scan rows begin..end of cells (row numbers from first_row) for personal data: in a
        block of digits only, the runs long enough for a card number (or starting with 0), else
        the cells pii.may_hold_personal_data accepts (an @ or two digits in a row)."""
        import numpy as np

        flags, chars = cells.flags[begin:end, index], cells.chars[begin:end, index]
        if digits_only:
            for i in np.flatnonzero(_long_digits(flags, chars)).tolist():
                self.profile.scan_cell(index, first_row + i, cells.text(begin + i, index))
            return
        marked, sure = _marked(flags)
        for i in marked.tolist():
            text = cells.text(begin + i, index)
            if sure[i] or pii.may_hold_personal_data(text):
                self.profile.scan_cell(index, first_row + i, text)

    def _vote_codes(self, cells: Cells, index: int, positions):
        """_vote_types' vote (an index into _VOTES, -1 for none) of each cell at positions; a cell
        is read only when its flags and first bytes do not settle its vote."""
        import numpy as np

        from app.services import csv_cell_flags

        codes = np.full(len(positions), -2, np.int64)  # -2: not settled yet
        if not len(positions):
            return codes
        flags = cells.flags[positions, index]
        chars = cells.chars[positions, index]
        codes[((flags & csv_cell_flags.SPACE_ONLY) != 0) & ((flags & csv_cell_flags.NON_ASCII) == 0)] = -1  # blank: no vote
        codes[((flags & csv_cell_flags.ALL_DIGITS) != 0) & (chars > 1) & (chars <= 18) & (codes == -2)] = _VOTES.index(("integer",))
        quoted = (flags & csv_cell_flags.QUOTED) != 0
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
        self.profile.vote_cell(votes, cell)
        kind = tuple(name for name, count in votes.items() if count)
        return _VOTES.index(kind) if kind else -1

    def close(self) -> None:
        """The last block, when the rows end inside it: scan its kept parts for personal data
        unless _flush would have skipped the column for it."""
        blocks, self._open_blocks = self._open_blocks, {}
        for index, block in sorted(blocks.items()):
            if self.profile.skips_personal_data(index, block.longest):
                continue
            for part, first_row in block.parts:
                self._scan_part(part, index, 0, part.rows, first_row, block.all_digits and block.any_digits)
