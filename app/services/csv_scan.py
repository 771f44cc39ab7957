"""A compiled scanner for the common upload: a UTF-8, comma-delimited CSV with a clean header.

Why it stays rather than pyarrow.csv (issue 11; `bench/ingest_throughput.py --pyarrow`, pandas 3.1.1,
pyarrow 26.0.1, shared 2-core machine): pyarrow parses as fast as pandas, but the profile is the cost.
pyarrow feeding the row-wise profile gave the same profile at 0.22x pandas by CPU seconds (1 GB: 16.0
CPU s, 283 MB peak) against this scanner's 0.48x (7.3 CPU s, 222 MB; pandas 3.5 CPU s, 2.2 GB). Its
speed on Arrow arrays would need a second implementation of every statistic, which the issue removes.

It reads records exactly as Python's `csv.reader` does (the excel dialect, `strict=False`, on a
file opened with `newline=""`) and, in the same pass over the bytes, works out the facts the
dataset profile needs of every cell: where it lies in the file, its length in characters, a
64-bit hash of its text and of its near-duplicate key (ASCII case, punctuation and spacing
ignored), and flags (blank, digits, an @, ...). No Python string is made for a cell unless the
profile needs its text (frequent values, sampled type votes, personal-data candidates).

Anything unusual — a ragged or blank record, a quote left open at the end, a cell over the size
limit — stops the scan (`Unusual`), and the upload goes through the general reader instead, which
explains the problem or repairs it. The scanner only ever speeds up files that need no fixing.

The text hash is xxhash's 64-bit round over eight bytes at a time. The near-duplicate hash turns
and mixes in a random 64-bit value per kept byte, one pass with no multiplication: two keys that
differ only by characters swapped exactly 64 (or 128, ...) kept characters apart would count as near
duplicates, a price for speed on a statistic; exact duplicates never rely on it.

numba compiles the kernel on first use and caches it beside this file (scripts/setup and the
Docker image compile it once).
"""

from __future__ import annotations

import codecs
import mmap
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numba import njit

from app.services.csv_cell_flags import (
    ALL_DIGITS,
    BYTES,
    COMMA,
    CR,
    DIGIT,
    DIGIT_PAIR,
    EMPTY,
    ENDS_FIELD,
    FIRST_ZERO,
    HAS_QUOTE,
    IRREGULAR,
    LF,
    NEAR_SHIFT,
    NEAR_VALUES,
    NON_ASCII,
    NOT_BLANK,
    NOT_DIGITS,
    NOT_UTF8,
    OK,
    OPEN_QUOTE,
    P1,
    P2,
    P3,
    QUOTE,
    QUOTED,
    RAGGED,
    SPACE_ONLY,
    TOO_LONG,
)
from app.services.tabular_formats import MAX_CELL_CHARS

READ_BYTES = 16 * 1024 * 1024  # the window scanned at a time
SPLIT_AT_LEAST = 512 * 1024  # bytes each thread scans at least, or one thread scans alone
MAX_RECORD_BYTES = 64 * 1024 * 1024  # a record longer than this goes to the general reader (and its cell limit)
MAX_CELLS_AT_ONCE = 1 << 18  # rows x columns of cell facts per kernel call


@njit(cache=True, inline="always")
def _words_hash(data, s, e):
    """A 64-bit hash of data[s:e], eight bytes at a time (xxhash's round and finish)."""
    h = np.uint64(e - s) * P3
    i = s
    while i + 8 <= e:
        w = (
            np.uint64(data[i])
            | np.uint64(data[i + 1]) << np.uint64(8)
            | np.uint64(data[i + 2]) << np.uint64(16)
            | np.uint64(data[i + 3]) << np.uint64(24)
            | np.uint64(data[i + 4]) << np.uint64(32)
            | np.uint64(data[i + 5]) << np.uint64(40)
            | np.uint64(data[i + 6]) << np.uint64(48)
            | np.uint64(data[i + 7]) << np.uint64(56)
        )
        h = h + w * P2
        h = ((h << np.uint64(31)) | (h >> np.uint64(33))) * P1
        i += 8
    w = np.uint64(0)
    while i < e:
        w = (w << np.uint64(8)) | np.uint64(data[i])
        i += 1
    h = h + w * P2
    h = ((h << np.uint64(31)) | (h >> np.uint64(33))) * P1
    h ^= h >> np.uint64(33)
    h *= P2
    h ^= h >> np.uint64(29)
    h *= P3
    h ^= h >> np.uint64(32)
    return h


@njit(cache=True, nogil=True)
def scan(data, pos, end, final, width, max_rows, starts, stops, chars, flags, exact, near, table, near_values, scratch):
    """Scan records from data[pos:end] into the cell arrays (max_rows x width). Returns (position
    after the last whole record taken, records taken, status). A record cut off by `end` is left
    for the next call unless `final` says the data ends there."""
    rows = 0
    while rows < max_rows and pos < end:
        p = pos
        if data[p] == LF or data[p] == CR:
            return pos, rows, RAGGED  # a blank line: the general reader skips it and rewrites the file
        column = 0
        while True:  # one cell a turn
            fl = 0
            hn = np.uint64(0)
            doubled = False
            if p < end and data[p] == QUOTE:
                fl |= QUOTED
                start = p
                p += 1
                s = p
                while True:
                    if p >= end:
                        if final:
                            return pos, rows, OPEN_QUOTE
                        return pos, rows, OK  # the next call takes the record whole
                    c = data[p]
                    if c == QUOTE:
                        if p + 1 >= end and not final:
                            return pos, rows, OK
                        if p + 1 < end and data[p + 1] == QUOTE:
                            doubled = True  # "" stands for one quote, which the near-duplicate key ignores anyway
                            fl |= HAS_QUOTE | NOT_BLANK | NOT_DIGITS
                            p += 2
                            continue
                        break
                    x = table[c]
                    fl |= x
                    r = np.uint64((x >> NEAR_SHIFT) & 63)
                    hn = ((hn << r) | (hn >> ((np.uint64(64) - r) & np.uint64(63)))) ^ near_values[c]
                    p += 1
                e = p
                p += 1  # the closing quote
                if p < end and (table[data[p]] & ENDS_FIELD) == 0:
                    return pos, rows, IRREGULAR  # text after the closing quote: csv.reader's strict=False rules
            else:
                start = p
                s = p
                while p < end:
                    c = data[p]
                    x = table[c]
                    if x & ENDS_FIELD:
                        break
                    fl |= x
                    r = np.uint64((x >> NEAR_SHIFT) & 63)
                    hn = ((hn << r) | (hn >> ((np.uint64(64) - r) & np.uint64(63)))) ^ near_values[c]
                    p += 1
                e = p
            if p >= end and not final:
                return pos, rows, OK  # the record may go on past end: the next call takes it whole
            if e - s >= MAX_CELL_CHARS:
                return pos, rows, TOO_LONG
            if column >= width:
                return pos, rows, RAGGED
            # the cell's facts
            if doubled:
                n = 0
                i = s
                while i < e:
                    scratch[n] = data[i]
                    n += 1
                    i += 2 if data[i] == QUOTE else 1
                exact[rows, column] = _words_hash(scratch, 0, n)
                length = n
            else:
                exact[rows, column] = _words_hash(data, s, e)
                length = e - s
            nchar = length
            if fl & NON_ASCII:
                nchar = 0
                for i in range(s, e):
                    nchar += (data[i] & 0xC0) != 0x80
                if doubled:
                    nchar -= (e - s) - length
            if fl & DIGIT:
                previous = False
                for i in range(s, e):
                    digit = data[i] >= 48 and data[i] <= 57
                    if digit and previous:
                        fl |= DIGIT_PAIR
                        break
                    previous = digit
                if length and data[s] == 48:
                    fl |= FIRST_ZERO
                if not (fl & NOT_DIGITS):
                    fl |= ALL_DIGITS
            if not (fl & NOT_BLANK):
                fl |= SPACE_ONLY
            if length == 0:
                fl |= EMPTY
            starts[rows, column] = start
            stops[rows, column] = e + 1 if fl & QUOTED else e
            chars[rows, column] = nchar
            flags[rows, column] = fl & 0xFFFF
            near[rows, column] = hn ^ (hn >> np.uint64(29))
            column += 1
            # what ended the cell
            if p >= end:  # final: the last line has no line break
                break
            c = data[p]
            p += 1
            if c == COMMA:
                continue
            if c == CR:
                if p < end:
                    if data[p] == LF:
                        p += 1
                elif not final:
                    return pos, rows, OK  # a \n may follow in the next read
            break
        if column != width:
            return pos, rows, RAGGED
        rows += 1
        pos = p
    return pos, rows, OK


@dataclass
class Cells:
    """Facts of `rows` consecutive records (the arrays hold rows x columns) and the bytes they lie in."""

    data: np.ndarray
    base: int  # the file offset of data[0]
    rows: int
    starts: np.ndarray
    stops: np.ndarray
    chars: np.ndarray
    flags: np.ndarray
    exact: np.ndarray
    near: np.ndarray

    def snapshot(self, begin: int, end: int) -> Cells:
        """Rows begin..end with a copy of the bytes they lie in: valid after the scan moves on."""
        low = int(self.starts[begin:end].min())
        high = int(self.stops[begin:end].max())
        return Cells(
            self.data[low:high].copy(),
            self.base + low,
            end - begin,
            self.starts[begin:end] - low,
            self.stops[begin:end] - low,
            self.chars[begin:end].copy(),
            self.flags[begin:end].copy(),
            self.exact[begin:end].copy(),
            self.near[begin:end].copy(),
        )

    def text(self, row: int, column: int) -> str:
        """One cell's text, as csv.reader gives it."""
        raw = self.data[self.starts[row, column] : self.stops[row, column]].tobytes()
        flag = self.flags[row, column]
        if flag & QUOTED:
            raw = raw[1:-1]
            if flag & HAS_QUOTE:
                raw = raw.replace(b'""', b'"')
        return raw.decode("utf-8")


class Unusual(Exception):
    """The file needs the general reader: status says why (RAGGED, OPEN_QUOTE, TOO_LONG, IRREGULAR,
    NOT_UTF8)."""

    def __init__(self, status: int):
        super().__init__(status)
        self.status = status


def _cell_arrays(rows: int, width: int) -> list[np.ndarray]:
    shape = (rows, width)
    return [
        np.empty(shape, np.int64),
        np.empty(shape, np.int64),
        np.empty(shape, np.int64),
        np.empty(shape, np.uint16),
        np.empty(shape, np.uint64),
        np.empty(shape, np.uint64),
    ]


@njit(cache=True, nogil=True)
def _next_line_start(data, position, end):
    """The position after the first line feed at or after position, or -1."""
    for i in range(position, end):
        if data[i] == LF:
            return i + 1
    return -1


class _Checker:
    """Feeds the file's bytes, in order, to the digest and checks that they are UTF-8 without NUL
    bytes (what detect_encoding would have found)."""

    def __init__(self, digest):
        self.digest = digest
        self.decoder = codecs.getincrementaldecoder("utf-8")()
        self.pending = False  # a character's first bytes ended the last piece

    def feed(self, piece: np.ndarray, final: bool) -> None:
        if self.digest is not None:
            self.digest.update(piece)
        if len(piece) and not piece.all():
            raise Unusual(NOT_UTF8)  # a NUL byte
        try:
            if self.pending or (len(piece) and int(piece.max()) >= 128):
                self.decoder.decode(piece.tobytes())
                self.pending = bool(self.decoder.getstate()[0])
            if final:
                self.decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise Unusual(NOT_UTF8) from None


class _Region:
    """Scans one buffer's records, in two halves at once where it is large enough."""

    def __init__(self, width: int, max_rows: int, helpers: ThreadPoolExecutor):
        self.width = width
        self.max_rows = max_rows
        self.helpers = helpers
        self.free: list[list[np.ndarray]] = []  # cell arrays the consumer is done with
        self.scratch = [np.empty(MAX_CELL_CHARS + 8, np.uint8), np.empty(MAX_CELL_CHARS + 8, np.uint8)]  # untouched pages cost nothing

    def arrays(self) -> list[np.ndarray]:
        return self.free.pop() if self.free else _cell_arrays(self.max_rows, self.width)

    def run(self, buffer, arrays, scratch, begin, end, final, rows):
        starts, stops, chars, flags, exact, near = arrays  # named, so the kernel's arguments can be checked
        return scan(buffer, begin, end, final, self.width, rows, starts, stops, chars, flags, exact, near, BYTES, NEAR_VALUES, scratch)

    def scan(self, buffer, position: int, filled: int, at_end: bool, skip: int):
        """(batches [(arrays, rows)], position after the last whole record, status, records still to skip)."""
        batches = []

        def take(begin: int, end: int, final: bool) -> tuple[int, int]:
            """Scan begin..end alone; returns (position reached, status)."""
            while True:
                arrays = self.arrays()
                taken, rows, status = self.run(buffer, arrays, self.scratch[0], begin, end, final, self.max_rows)
                if rows:
                    batches.append((arrays, rows))
                else:
                    self.free.append(arrays)
                if status != OK or rows == 0 or taken == end:
                    return taken, status
                begin = taken

        while skip:
            arrays = self.arrays()
            taken, rows, status = self.run(buffer, arrays, self.scratch[0], position, filled, at_end, 1)
            self.free.append(arrays)
            if status != OK or not rows:
                return batches, position, status, skip
            position, skip = taken, skip - 1
        while True:
            split = -1
            if filled - position >= 2 * SPLIT_AT_LEAST:
                split = _next_line_start(buffer, position + (filled - position) // 2, filled)
            if split <= 0:
                position, status = take(position, filled, at_end)
                return batches, position, status, 0
            second_arrays = self.arrays()
            second = self.helpers.submit(self.run, buffer, second_arrays, self.scratch[1], split, filled, at_end, self.max_rows)
            reached, status = take(position, split, False)
            taken, rows, second_status = second.result()
            if status != OK:
                self.free.append(second_arrays)
                return batches, reached, status, 0
            if reached != split:  # the split fell inside a record: go on from where the first half stopped
                self.free.append(second_arrays)
                position, status = take(reached, filled, at_end)
                return batches, position, status, 0
            if rows:
                batches.append((second_arrays, rows))
            else:
                self.free.append(second_arrays)
            if second_status != OK or rows == 0 or taken == filled:
                return batches, taken, second_status, 0
            position = taken  # the second half filled its arrays: scan on from there


def scan_file(path: Path, width: int, skip_records: int = 1, digest=None) -> Iterator[Cells]:
    """The records of a UTF-8 comma-delimited CSV of `width` columns after the first skip_records
    (the header), as Cells, a bounded number at a time (each valid until the next is asked for).
    Every byte goes to digest (a hashlib object) on the way. Raises Unusual where the general
    reader is needed.

    The file is mapped into memory and scanned a window at a time; pages already handled are
    given back, so memory stays flat. The work runs beside the caller: while it handles one
    window's Cells, the next window is hashed and scanned, in two halves at once (the second from
    its first line start; its records count only if the first half's last record ends exactly
    there, since a line break inside quotes would make it start mid-record)."""
    max_rows = max(1, min(16384, MAX_CELLS_AT_ONCE // max(width, 1)))
    checker = _Checker(digest)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise Unusual(RAGGED)
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        yield from _scan_mapped(mapped, size, width, max_rows, skip_records, checker)
    finally:
        try:
            mapped.close()
        except BufferError:  # a caller still holds Cells of it: the mapping closes when they go
            pass


def _scan_mapped(mapped: mmap.mmap, size: int, width: int, max_rows: int, skip: int, checker: _Checker) -> Iterator[Cells]:
    data = np.frombuffer(mapped, np.uint8)
    page = mmap.PAGESIZE
    with (
        ThreadPoolExecutor(1, thread_name_prefix="tailor-csv-check") as checks,
        ThreadPoolExecutor(1, thread_name_prefix="tailor-csv-scan") as scans,
        ThreadPoolExecutor(1, thread_name_prefix="tailor-csv-half") as helpers,
    ):
        region = _Region(width, max_rows, helpers)
        window = READ_BYTES
        position = 0  # where the next window's records begin
        checked = 0  # bytes handed to the checker so far
        released = 0  # pages before this were given back

        def start(begin: int) -> tuple:
            nonlocal checked
            end = min(size, begin + window)
            check = checks.submit(checker.feed, data[checked:end], end == size) if end > checked else None
            checked = max(checked, end)
            return end, check, scans.submit(region.scan, data, begin, end, end == size, skip)

        end, check, scanned = start(position)
        while True:
            batches, taken, status, skip = scanned.result()
            if check is not None:
                check.result()
            if status != OK:
                raise Unusual(status)
            at_end = end == size
            if at_end:
                if taken < size or skip:
                    raise Unusual(RAGGED)
            elif taken == position:  # one record longer than the window: widen it
                if window >= MAX_RECORD_BYTES:
                    raise Unusual(TOO_LONG)
                window *= 2
                end, check, scanned = start(position)
                continue
            else:
                window = READ_BYTES
                end, check, scanned = start(taken)
            for arrays, rows in batches:
                yield Cells(data, 0, rows, *(a[:rows] for a in arrays))
                region.free.append(arrays)
            # Give back the pages of the records handled (the file stays in the page cache).
            done = (taken // page) * page
            if done > released:
                mapped.madvise(mmap.MADV_DONTNEED, released, done - released)
                released = done
            if at_end:
                return
            position = taken
