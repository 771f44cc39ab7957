"""The pure helpers of bench/first_job.py: reading the training form and its estimate as the
browser sees them, and comparing the evaluation's intervals (tested in
tests/app/test_first_job_estimates.py)."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

LOWER_IS_BETTER = ("validation_loss", "perplexity")


class _FormReader(HTMLParser):
    """The fields a browser sends for one form: disabled fieldsets, disabled controls, unchecked
    boxes and buttons left out; a select sends its selected options (else its first enabled one)."""

    def __init__(self, form_id: str):
        super().__init__(convert_charrefs=True)
        self.form_id = form_id
        self.in_form = False
        self.disabled_depth: list[bool] = []
        self.fields: list[tuple[str, str]] = []
        self._select: dict | None = None
        self._option: dict | None = None
        self._textarea: dict | None = None

    def _disabled(self) -> bool:
        return any(self.disabled_depth)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            self.in_form = a.get("id") == self.form_id
            return
        if not self.in_form:
            return
        if tag == "fieldset":
            self.disabled_depth.append("disabled" in a)
        elif tag == "input" and not self._disabled() and "disabled" not in a and a.get("name"):
            kind = (a.get("type") or "text").lower()
            if kind in ("submit", "button", "file", "image", "reset"):
                return
            if kind in ("checkbox", "radio") and "checked" not in a:
                return
            self.fields.append((a["name"], a.get("value") or ("on" if kind in ("checkbox", "radio") else "")))
        elif tag == "select":
            self._select = {"name": a.get("name"), "off": self._disabled() or "disabled" in a, "options": [], "multiple": "multiple" in a}
        elif tag == "option" and self._select is not None:
            self._option = {"value": a.get("value"), "selected": "selected" in a, "disabled": "disabled" in a, "text": ""}
            self._select["options"].append(self._option)
        elif tag == "textarea" and not self._disabled() and "disabled" not in a and a.get("name"):
            self._textarea = {"name": a["name"], "text": ""}

    def handle_data(self, data):
        if self._option is not None:
            self._option["text"] += data
        if self._textarea is not None:
            self._textarea["text"] += data

    def handle_endtag(self, tag):
        if tag == "form":
            self.in_form = False
        elif not self.in_form:
            return
        elif tag == "fieldset" and self.disabled_depth:
            self.disabled_depth.pop()
        elif tag == "option":
            self._option = None
        elif tag == "textarea" and self._textarea is not None:
            self.fields.append((self._textarea["name"], self._textarea["text"]))
            self._textarea = None
        elif tag == "select" and self._select is not None:
            select, self._select = self._select, None
            if select["off"] or not select["name"]:
                return
            options = [o for o in select["options"] if not o["disabled"]]
            chosen = [o for o in options if o["selected"]]
            if not chosen and not select["multiple"] and options:
                chosen = options[:1]
            for o in chosen:
                value = o["value"] if o["value"] is not None else o["text"].strip()
                self.fields.append((select["name"], value))


def form_fields(html: str, form_id: str) -> list[tuple[str, str]]:
    """(name, value) pairs in document order, as a browser would post the form `form_id`."""
    reader = _FormReader(form_id)
    reader.feed(html)
    return reader.fields


def as_form(fields: list[tuple[str, str]]) -> dict[str, list[str]]:
    """The pairs as httpx's form body (a name may repeat: a multiple select)."""
    out: dict[str, list[str]] = {}
    for name, value in fields:
        out.setdefault(name, []).append(value)
    return out


def json_script(html: str, element_id: str):
    """The JSON inside <script type="application/json" id=element_id>."""
    match = re.search(rf'<script type="application/json" id="{re.escape(element_id)}">(.*?)</script>', html, re.S)
    if match is None:
        raise ValueError(f"no JSON script #{element_id} in the page")
    return json.loads(match.group(1))


def apply_preset(fields: list[tuple[str, str]], presets: dict) -> tuple[list[tuple[str, str]], dict]:
    """What static/app.js applyPreset does on page load: the chosen preset's values replace the
    chosen technique's param_ fields. Returns (fields, the preset's values)."""
    first = {name: value for name, value in reversed(fields)}
    preset, technique, task = first.get("preset", ""), first.get("technique", ""), first.get("task", "")
    values = ((presets.get(technique) or {}).get(task) or {}).get(preset) or {} if preset else {}
    out = [(name, str(values[name[6:]]) if name.startswith("param_") and name[6:] in values else value) for name, value in fields]
    return out, values


def text_of(html: str, element_id: str) -> str:
    """The visible text of the element with this id (tags dropped, spaces collapsed)."""
    match = re.search(rf'id="{re.escape(element_id)}"[^>]*>(.*?)</dd>', html, re.S)
    if match is None:
        return ""
    return " ".join(re.sub(r"<[^>]+>", " ", match.group(1)).split())


def shown_seconds(text: str) -> float | None:
    """Seconds from the form's "about 3 min 50 s" / "about 12 min" / "about 70 s" / "about 1.5 h"."""
    match = re.search(r"about ([\d.]+) (s|min|h)\b(?: (\d+) s\b)?", text)
    if match is None:
        return None
    return float(match.group(1)) * {"s": 1, "min": 60, "h": 3600}[match.group(2)] + float(match.group(3) or 0)


def shown_gigabytes(text: str) -> float | None:
    match = re.search(r"([\d.]+) GB", text)
    return float(match.group(1)) if match else None


def percent_error(estimate: float | None, actual: float | None) -> float | None:
    """(estimate - actual) / actual in percent; None when either is missing."""
    if estimate is None or not actual:
        return None
    return 100.0 * (estimate - actual) / actual


def better_apart(summary: dict) -> list[str]:
    """Metrics where the adapter beats the base model with 95% intervals that do not overlap."""
    out = []
    adapter, base = summary.get("adapter") or {}, summary.get("base") or {}
    for metric, a in adapter.items():
        b = base.get(metric)
        if not isinstance(a, dict) or not isinstance(b, dict):
            continue
        if metric in LOWER_IS_BETTER:
            if a["high"] < b["low"]:
                out.append(metric)
        elif a["low"] > b["high"]:
            out.append(metric)
    return out
