"""The facts the compiled CSV scanner (csv_scan) records about each cell, as bit flags, its scan
results, and the per-byte table its kernel reads (which bytes end a field, which count as blank or
digits, and each byte's part in the near-duplicate hash). Read by the profile's cell feed too."""

from __future__ import annotations

import string

import numpy as np

# Cell flags
EMPTY = 1  # no characters at all
SPACE_ONLY = 2  # every byte is ASCII white space (as str.isspace sees it) or non-ASCII: decide in Python when NON_ASCII
NON_ASCII = 4
AT_SIGN = 8
DIGIT = 16  # an ASCII digit
DIGIT_PAIR = 32  # two ASCII digits in a row
ALL_DIGITS = 64  # at least one character, all ASCII digits
FIRST_ZERO = 128
QUOTED = 256  # the cell's text is its bytes without the outer quotes, "" read as "
HAS_QUOTE = 1024  # a quote character in the text
NOT_BLANK = 1 << 20  # (while scanning)
NOT_DIGITS = 1 << 21

# Scan results
OK = 0
RAGGED = 1  # a record with another number of cells than the header, or a blank one
OPEN_QUOTE = 2  # the data ends inside a quoted cell
TOO_LONG = 3  # a cell over MAX_CELL_CHARS bytes
IRREGULAR = 4  # text after a closing quote, which csv.reader joins to the cell (strict=False)
NOT_UTF8 = 5  # not UTF-8, or a NUL byte: the general reader names the problem or reads it as Windows-1252

COMMA, QUOTE, CR, LF = 44, 34, 13, 10
ENDS_FIELD = 1 << 30  # in BYTES: a comma or a line break
NEAR_SHIFT = 40  # in BYTES: how far the near-duplicate hash turns for this byte (0: the byte is ignored)

P1 = np.uint64(0x9E3779B185EBCA87)
P2 = np.uint64(0xC2B2AE3D27D4EB4F)
P3 = np.uint64(0x165667B19E3779F9)


def _byte_tables() -> tuple[np.ndarray, np.ndarray]:
    """BYTES: per byte value, its flags, whether it ends an unquoted field and the near-hash
    turn; NEAR_VALUES: its random 64-bit value in the near-duplicate key (0 when ignored)."""
    kept = np.arange(256, dtype=np.int64)  # byte -> its byte in the near-duplicate key, -1: dropped
    for c in (string.punctuation + string.whitespace).encode():
        kept[c] = -1
    for c in string.ascii_uppercase.encode():
        kept[c] = c + 32
    random_values = np.random.default_rng(20261129).integers(1, 2**63, 256, dtype=np.int64).view(np.uint64)
    table = np.zeros(256, np.int64)
    values = np.zeros(256, np.uint64)
    for c in range(256):
        bits = 0
        if c >= 128:
            bits |= NON_ASCII | NOT_DIGITS
        else:
            if not chr(c).isspace():
                bits |= NOT_BLANK
            if 48 <= c <= 57:
                bits |= DIGIT
            else:
                bits |= NOT_DIGITS
            if c == 64:
                bits |= AT_SIGN
            if c == QUOTE:
                bits |= HAS_QUOTE
        if c in (COMMA, CR, LF):
            bits |= ENDS_FIELD
        if kept[c] >= 0:
            bits |= 5 << NEAR_SHIFT
            values[c] = random_values[kept[c]]
        table[c] = bits
    return table, values


BYTES, NEAR_VALUES = _byte_tables()
