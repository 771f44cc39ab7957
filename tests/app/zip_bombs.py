"""Hostile .xlsx files built in a blink: real workbooks whose parts unpack to gigabytes.

A part is given as pieces, each `(bytes, times)`: the bytes are deflated once (ended by a full
flush, which makes the deflated block independent of what came before) and the block is repeated
`times` times. So 1 GiB of repeated bytes costs one 1 MiB compression and about 1 MB of file, and
the archive is honest: its directory declares the true sizes and CRCs, and inflating it really
gives the gigabyte.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

MiB = 1024 * 1024

CONTENT_TYPES = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
    '<Default Extension="xml" ContentType="application/xml"/>'
    '<Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
    '<Override PartName="/xl/worksheets/sheet1.xml" '
    'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
    '<Override PartName="/xl/sharedStrings.xml" '
    'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"/>'
    "</Types>"
)
ROOT_RELS = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" '
    'Target="xl/workbook.xml"/></Relationships>'
)
WORKBOOK = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    '<workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" '
    'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships">'
    '<sheets><sheet name="Data" sheetId="1" r:id="rId1"/></sheets></workbook>'
)
WORKBOOK_RELS = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" '
    'Target="worksheets/sheet1.xml"/>'
    '<Relationship Id="rId2" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/sharedStrings" '
    'Target="sharedStrings.xml"/></Relationships>'
)
SHEET_START = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?><worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>'
SHEET_END = "</sheetData></worksheet>"
SST_START = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?><sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'


Pieces = list[tuple[bytes, int]]


def _deflate_pieces(pieces: Pieces) -> tuple[bytes, int, int]:
    """(raw deflate stream, crc32, unpacked size) of the pieces, each piece deflated once."""
    blocks, crc, size = [], 0, 0
    for data, times in pieces:
        packer = zlib.compressobj(9, zlib.DEFLATED, -15)
        block = packer.compress(data) + packer.flush(zlib.Z_FULL_FLUSH)
        blocks.append(block * times)
        for _ in range(times):
            crc = zlib.crc32(data, crc)
        size += len(data) * times
    blocks.append(b"\x03\x00")  # an empty final block
    return b"".join(blocks), crc, size


def write_xlsx(path: Path, parts: dict[str, Pieces]) -> Path:
    """A ZIP archive (deflated parts) of the given parts, written by hand so parts can be huge."""
    local, central = bytearray(), bytearray()
    for name, pieces in parts.items():
        data, crc, size = _deflate_pieces(pieces)
        encoded = name.encode()
        offset = len(local)
        local += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0, crc, len(data), size, len(encoded), 0) + encoded + data
        central += (
            struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0, crc, len(data), size, len(encoded), 0, 0, 0, 0, 0, offset)
            + encoded
        )
    count = len(parts)
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, count, count, len(central), len(local), 0)
    path.write_bytes(bytes(local) + bytes(central) + end)
    return path


def workbook(path: Path, sheet: Pieces, shared_strings: Pieces | None = None, extra: dict[str, Pieces] | None = None) -> Path:
    """A one-sheet workbook ('Data') with the given sheet XML and shared strings."""
    parts: dict[str, Pieces] = {
        "[Content_Types].xml": [(CONTENT_TYPES.encode(), 1)],
        "_rels/.rels": [(ROOT_RELS.encode(), 1)],
        "xl/workbook.xml": [(WORKBOOK.encode(), 1)],
        "xl/_rels/workbook.xml.rels": [(WORKBOOK_RELS.encode(), 1)],
        "xl/worksheets/sheet1.xml": sheet,
        "xl/sharedStrings.xml": shared_strings or [(SST_START.encode() + b"</sst>", 1)],
    }
    parts.update(extra or {})
    return write_xlsx(path, parts)


def inline_row(number: int, *cells: str) -> bytes:
    """One sheet row of inline strings."""
    inner = "".join(f'<c r="{chr(65 + i)}{number}" t="inlineStr"><is><t>{v}</t></is></c>' for i, v in enumerate(cells))
    return f'<row r="{number}">{inner}</row>'.encode()


def shared_row(number: int, *indexes: int) -> bytes:
    """One sheet row whose cells are shared strings (by index)."""
    inner = "".join(f'<c r="{chr(65 + i)}{number}" t="s"><v>{v}</v></c>' for i, v in enumerate(indexes))
    return f'<row r="{number}">{inner}</row>'.encode()


def shared_strings_bomb(path: Path, unpacked_bytes: int) -> Path:
    """A workbook whose one shared string is `unpacked_bytes` of 'a' (packed about 1,000 times)."""
    chunk = b"a" * MiB
    sst = [(SST_START.encode() + b'<si><t xml:space="preserve">', 1), (chunk, unpacked_bytes // MiB), (b"</t></si></sst>", 1)]
    sheet = [(SHEET_START.encode() + shared_row(1, 0) + SHEET_END.encode(), 1)]
    return workbook(path, sheet, sst)
