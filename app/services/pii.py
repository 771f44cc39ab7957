"""Personal data in free text: emails, phone numbers, card numbers (Luhn), IBANs (mod 97) and
US social security numbers. Found spans can be counted per column or masked in a training copy."""

from __future__ import annotations

import re

KINDS = {
    "email": "Email addresses",
    "phone": "Phone numbers",
    "card": "Payment card numbers",
    "iban": "IBANs (bank accounts)",
    "ssn": "US social security numbers",
}
MASKS = {kind: f"[{kind.upper()}]" for kind in KINDS}

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,24}")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b")
_SSN = re.compile(r"(?<![\d-])\d{3}-\d{2}-\d{4}(?![\d-])")
# A run of digits with the separators people type in phone and card numbers.
_NUMBER = re.compile(r"(?<![\w.,/-])\+?\(?\d[\d \-./()]{5,22}\d(?![\w]|[.,]\d)")
_DATE = re.compile(r"^\d{1,4}[-./]\d{1,2}[-./]\d{1,4}$")
# Cheap pre-checks so most cells skip the patterns entirely.
_THREE_DIGITS = re.compile(r"\d\d\d")
_IBAN_GATE = re.compile(r"[A-Z]{2}\d\d")
_NUMBER_GATE = re.compile(r"\d[\d \-./()]{5,}\d")
_DROP_SEPARATORS = str.maketrans("", "", " -./()+")


_DIGIT_PAIR = re.compile(r"\d\d")  # a plain character-class scan: far quicker than one pattern with alternatives


def may_hold_personal_data(text: str) -> bool:
    """False when no pattern can match (most cells). Every kind holds an @ or two digits in a
    row; substring tests run at memory speed, so the (much slower) regex runs only on cells
    that hold a digit at all."""
    if "@" in text:
        return True
    for digit in "0123456789":
        if digit in text:
            return _DIGIT_PAIR.search(text) is not None
    return False


def luhn_valid(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if index % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def iban_valid(candidate: str) -> bool:
    text = candidate.replace(" ", "")
    if not 15 <= len(text) <= 34:
        return False
    rearranged = text[4:] + text[:4]
    try:
        return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1
    except ValueError:
        return False


def find_personal_data(text: str) -> list[tuple[str, int, int]]:
    """(kind, start, end) spans of personal data in text, left to right, not overlapping."""
    spans: list[tuple[str, int, int]] = []
    if len(text) < 6 or (len(text) <= 32 and _DATE.match(text.strip())):
        return spans
    if "@" in text:
        spans.extend(("email", m.start(), m.end()) for m in _EMAIL.finditer(text))
    if _IBAN_GATE.search(text) is not None:
        for m in _IBAN.finditer(text):
            if iban_valid(m.group()):
                spans.append(("iban", m.start(), m.end()))
    if _NUMBER_GATE.search(text) is not None and not _DATE.match(text.strip()):
        for m in _SSN.finditer(text):
            spans.append(("ssn", m.start(), m.end()))
        for m in _NUMBER.finditer(text):
            raw = m.group()
            digits = raw.translate(_DROP_SEPARATORS)
            if 13 <= len(digits) <= 19 and digits.isdigit() and luhn_valid(digits):
                spans.append(("card", m.start(), m.end()))
            elif (
                7 <= len(digits) <= 15
                and not _DATE.match(raw.strip())
                and (raw.startswith(("+", "(", "0")) or any(sep in raw for sep in " -./()"))
            ):
                if raw.count(".") > 1 and " " not in raw and "-" not in raw:  # 1.234.567 is a number, not a phone
                    continue
                spans.append(("phone", m.start(), m.end()))
    if len(spans) < 2:
        return spans
    spans.sort(key=lambda s: (s[1], -(s[2] - s[1])))
    kept: list[tuple[str, int, int]] = []
    for span in spans:
        if not kept or span[1] >= kept[-1][2]:
            kept.append(span)
    return kept


def mask_personal_data(text: str) -> tuple[str, dict[str, int]]:
    """Replace every span with a placeholder like [EMAIL]; returns (masked text, counts per kind)."""
    spans = find_personal_data(text)
    if not spans:
        return text, {}
    counts: dict[str, int] = {}
    parts = []
    last = 0
    for kind, start, end in spans:
        parts.append(text[last:start])
        parts.append(MASKS[kind])
        counts[kind] = counts.get(kind, 0) + 1
        last = end
    parts.append(text[last:])
    return "".join(parts), counts


def redact_example(value: str) -> str:
    """Show enough of a found value to recognise it without repeating it in full."""
    value = value.strip()
    if "@" in value:  # the domain says whose address it is; the person stays hidden
        local, _, domain = value.partition("@")
        return local[:2] + "•" * max(1, len(local) - 2) + "@" + domain
    if len(value) <= 6:
        return value[:1] + "•" * (len(value) - 1)
    keep = 2 if len(value) < 12 else 4
    return value[:keep] + "•" * (len(value) - 2 * keep) + value[-keep:]
