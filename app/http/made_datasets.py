"""Datasets made from what happened in Tailor (blind-review votes, playground corrections, a served
adapter's rated answers), shared by pages and API: build one, refuse with 409 when there is nothing
to build it from, and record it in the audit log as an upload is recorded."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import HTTPException, Request
from sqlalchemy.orm import Session

from app.http import auditing
from app.models import Dataset, User
from app.services import preference_datasets


def made_dataset(request: Request, db: Session, user: User, build: Callable[[], Dataset], source: str, **details: Any) -> Dataset:
    try:
        dataset = build()
    except preference_datasets.PreferenceDataError as exc:
        raise HTTPException(409, str(exc)) from None
    recorded = {"filename": dataset.original_filename, "source": source, "rows": dataset.row_count, **details}
    auditing.record(request, db, user, "dataset_uploaded", ("dataset", dataset.id), recorded)
    return dataset
