"""Free text that is stored and shown again (names): without control characters. A NUL cannot be
stored by PostgreSQL at all (a server error), and line breaks or terminal escapes in a name only
ever cause trouble where it is shown or exported."""

from __future__ import annotations

import unicodedata


def without_controls(text: str | None) -> str:
    """The text with every control character (Unicode category Cc: NUL, tab, line breaks, ESC) removed."""
    return "".join(ch for ch in text or "" if unicodedata.category(ch) != "Cc")
