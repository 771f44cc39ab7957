"""Reading the row a task was queued for, which may have been deleted since."""

from __future__ import annotations

from typing import TypeVar

from sqlalchemy.orm import Session

T = TypeVar("T")


class RowGone(LookupError):
    """The row a worker task needs was deleted while the task waited or ran."""

    def __init__(self, model: type, row_id: int):
        super().__init__(f"{model.__name__} {row_id} no longer exists; it was deleted while this task waited or ran.")


def require_row(db: Session, model: type[T], row_id: int) -> T:
    """`db.get(model, row_id)`, or RowGone when the row is not there."""
    row = db.get(model, row_id)
    if row is None:
        raise RowGone(model, row_id)
    return row
