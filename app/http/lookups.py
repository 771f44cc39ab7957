"""Objects of the user's workspace by id, or HTTP 404 (ids come from paths, bodies or forms), and
the parsing of id lists."""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException
from sqlalchemy.orm import Session

from app.domain.numbers import record_id
from app.models import Adapter, Dataset, Job, User
from app.services import bakeoff, compare
from app.services.artifacts import ArtifactStore


def _in_workspace(db: Session, model: type, object_id: Any, user: User, what: str):
    key = record_id(object_id)  # an id beyond the database's range is no row (not a database error)
    found = db.get(model, key) if key is not None else None
    if found is None or found.workspace_id != user.workspace_id:
        raise HTTPException(404, f"There is no such {what} in your workspace.")
    return found


def dataset_in_workspace(db: Session, dataset_id: Any, user: User) -> Dataset:
    """The dataset if it exists in the user's workspace, else 404."""
    return _in_workspace(db, Dataset, dataset_id, user, "dataset")


def job_in_workspace(db: Session, job_id: Any, user: User) -> Job:
    return _in_workspace(db, Job, job_id, user, "job")


def adapter_in_workspace(db: Session, adapter_id: Any, user: User) -> Adapter:
    return _in_workspace(db, Adapter, adapter_id, user, "adapter")


def member_in_workspace_or_404(db: Session, user_id: Any, user: User) -> User:
    """A user of the asking user's workspace, else 404."""
    return _in_workspace(db, User, user_id, user, "user")


def parse_ids(ids: list[str]) -> list[int]:
    """?ids=1&ids=2 or ?ids=1,2 — both work (checkbox forms send the first, people type the second)."""
    parts = [part.strip() for value in ids for part in value.split(",") if part.strip()]
    if not all(part.isascii() and part.isdigit() for part in parts):
        raise HTTPException(422, "Adapter ids must be whole numbers, e.g. /compare?ids=1,2.")
    return [record_id(part) or 0 for part in parts]  # 0 (beyond the range): no such adapter, a 404


def comparison_or_404(db: Session, store: ArtifactStore, user: User, ids: list[str]) -> dict:
    """The comparison of the workspace's adapters named by ids (404 for an unknown one, 422 otherwise)."""
    try:
        return compare.build_comparison(db, store, user.workspace_id, parse_ids(ids))
    except compare.CompareError as exc:
        raise HTTPException(404 if "no adapter" in str(exc) else 422, str(exc)) from None


def group_or_404(db: Session, store: ArtifactStore, user: User, group_id: str) -> dict:
    """A bake-off of the workspace: {"state", "recommendation"} (the recommendation once it finished)."""
    state = bakeoff.group_state(db, user.workspace_id, group_id)
    if state is None:
        raise HTTPException(404, "There is no such bake-off in your workspace.")
    return {"state": state, "recommendation": bakeoff.recommend(store, state) if state.finished else None}
