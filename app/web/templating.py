"""The Jinja environment and the small formatting filters the templates use."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from fastapi import Request
from fastapi.templating import Jinja2Templates

from app.http.auth import csrf_token
from app.services.dataset_ingest import format_bytes
from app.services.tabular_formats import neutralise_formula

TEMPLATES_DIR = Path(__file__).resolve().parent.parent.parent / "templates"


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def format_time(value: datetime | None) -> str:
    if value is None:
        return "—"
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.strftime("%Y-%m-%d %H:%M UTC")


def format_count(n: int | float | None) -> str:
    if n is None:
        return "—"
    n = float(n)
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n:.0f}"


templates = Jinja2Templates(directory=str(TEMPLATES_DIR))


def inert(value) -> str:
    """Cells and names shown back to people: a spreadsheet must not run them as formulas."""
    return neutralise_formula(str(value)) if value is not None else ""


templates.env.filters.update(duration=format_duration, time=format_time, bytes=format_bytes, count=format_count, inert=inert)
templates.env.globals["csrf_token"] = lambda request: csrf_token(request)


def render(request: Request, name: str, context: dict | None = None, status_code: int = 200, headers: dict | None = None):
    ctx = {"request": request, "user": getattr(request.state, "user", None)}
    ctx.update(context or {})
    return templates.TemplateResponse(request, name, ctx, status_code=status_code, headers=headers)
