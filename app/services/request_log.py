"""The optional request log of an adapter (off by default): each /v1 prompt and its answer, kept
for the adapter's retention period (older rows are deleted as new ones are written), browsable,
and exported as a CSV with `prompt` and `answer` columns that uploads straight back as a dataset.
Reviewers rate each logged answer thumbs up or down; the rated answers become a feedback dataset
(prompt, answer, good/bad) for KTO through `preference_datasets.feedback_dataset`."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from app.models import Adapter, Dataset, ServingLogEntry, utcnow
from app.services import preference_datasets
from app.services.artifacts import ArtifactStore
from app.services.tabular_formats import neutralise_formula

RATINGS: dict[str, bool | None] = {"good": True, "bad": False, "none": None}

MAX_RETENTION_DAYS = 3650


class RequestLogError(ValueError):
    """A request-log setting that cannot be saved, worded for the person."""


def configure(db: Session, adapter: Adapter, enabled: bool, retention_days: str | int) -> None:
    try:
        days = int(str(retention_days).strip())
    except ValueError:
        raise RequestLogError("The retention period is a whole number of days.") from None
    if not 1 <= days <= MAX_RETENTION_DAYS:
        raise RequestLogError(f"Keep the log between 1 and {MAX_RETENTION_DAYS} days.")
    adapter.request_log_enabled = enabled
    adapter.request_log_retention_days = days
    db.flush()


def prompt_text(messages: list[dict[str, str]] | None, prompt: str | None) -> str:
    """What the log keeps as the prompt: a chat's last user message (the question), or the plain prompt."""
    if messages is not None:
        users = [m.get("content", "") for m in messages if m.get("role") == "user"]
        return users[-1] if users else (messages[-1].get("content", "") if messages else "")
    return prompt or ""


def record(db: Session, workspace_id: int, adapter_id: int, retention_days: int, prompt: str, answer: str) -> None:
    db.add(ServingLogEntry(workspace_id=workspace_id, adapter_id=adapter_id, prompt=prompt, answer=answer))
    db.execute(
        delete(ServingLogEntry).where(
            ServingLogEntry.adapter_id == adapter_id, ServingLogEntry.created_at < utcnow() - timedelta(days=retention_days)
        )
    )
    db.flush()


def entries(db: Session, adapter: Adapter, limit: int = 50, offset: int = 0) -> list[ServingLogEntry]:
    query = select(ServingLogEntry).where(ServingLogEntry.adapter_id == adapter.id).order_by(ServingLogEntry.id.desc())
    return list(db.scalars(query.limit(limit).offset(offset)))


def count(db: Session, adapter: Adapter) -> int:
    return db.scalar(select(func.count()).select_from(ServingLogEntry).where(ServingLogEntry.adapter_id == adapter.id)) or 0


def export_csv(db: Session, adapter: Adapter) -> bytes:
    """UTF-8 CSV, oldest first, columns prompt and answer (cells a spreadsheet would run as formulas neutralised)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["prompt", "answer"])
    query = select(ServingLogEntry.prompt, ServingLogEntry.answer).where(ServingLogEntry.adapter_id == adapter.id)
    for prompt, answer in db.execute(query.order_by(ServingLogEntry.id)):
        writer.writerow([neutralise_formula(prompt), neutralise_formula(answer)])
    return out.getvalue().encode("utf-8")


# ---------------------------------------------------------------- ratings and the feedback dataset


def entry_of(db: Session, adapter: Adapter, entry_id: int) -> ServingLogEntry | None:
    """A log entry of this adapter (and so of its workspace), or None."""
    entry = db.get(ServingLogEntry, entry_id)
    if entry is None or entry.adapter_id != adapter.id or entry.workspace_id != adapter.workspace_id:
        return None
    return entry


def rate(db: Session, entry: ServingLogEntry, rating: str | None, user_id: int | None) -> None:
    """Thumbs up ('good'), down ('bad'), or taken back ('none' / None); remembers who and when."""
    key = (rating or "none").strip().lower()
    if key not in RATINGS:
        raise RequestLogError("Rate an answer good or bad (or none to take the rating back).")
    entry.rating = RATINGS[key]
    entry.rated_by_id = user_id if entry.rating is not None else None
    entry.rated_at = utcnow() if entry.rating is not None else None
    db.flush()


def rating_name(entry: ServingLogEntry) -> str:
    return "none" if entry.rating is None else ("good" if entry.rating else "bad")


def rated_rows(db: Session, adapter: Adapter) -> list[tuple[str, str, bool]]:
    """(prompt, answer, good) of the adapter's rated entries, oldest first."""
    query = select(ServingLogEntry.prompt, ServingLogEntry.answer, ServingLogEntry.rating).where(
        ServingLogEntry.adapter_id == adapter.id, ServingLogEntry.rating.is_not(None)
    )
    return [(p, a, bool(r)) for p, a, r in db.execute(query.order_by(ServingLogEntry.id))]


def rated_counts(db: Session, adapter: Adapter) -> dict[str, int]:
    """How many entries are rated good and bad, and how many rows a feedback dataset gets (empty prompts or answers left out)."""
    rows = rated_rows(db, adapter)
    good = sum(1 for _, _, g in rows if g)
    return {"good": good, "bad": len(rows) - good, "rows": sum(1 for p, a, _ in rows if p.strip() and a.strip())}


def feedback_dataset(db: Session, store: ArtifactStore, adapter: Adapter, user_id: int | None) -> Dataset:
    """The rated entries as a feedback dataset (prompt, answer, feedback good/bad) through the normal
    ingest; PreferenceDataError when nothing is rated."""
    name = f"request-log-{adapter.slug or adapter.id}-feedback"
    return preference_datasets.feedback_dataset(
        db, store, workspace_id=adapter.workspace_id, user_id=user_id, name=name, rows=rated_rows(db, adapter)
    )
