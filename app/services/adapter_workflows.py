"""The background workflows of an adapter (its evaluation, the merged and the GGUF export).

Each workflow has its own columns on the adapter (`<key>_state`, `<key>_error`) and every change
is one conditional UPDATE of those columns, as jobs are claimed: two tasks finishing together
never overwrite each other, a duplicate wake-up never runs a workflow twice at once, and a second
request while one is queued or running is refused instead of starting another.

    never asked / done / failed --request--> queued --start--> running --finish--> done | failed
    queued --wake-up could not be sent--> failed

Each run on a worker, from `start` to `finish`, is recorded in workflow_runs, so that its running
time counts in the workspace's GPU hours (app/services/quotas.py).

Services flush; the request or task boundary commits (see app/services/wakeups.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, or_, select, update
from sqlalchemy.orm import InstrumentedAttribute, Session

from app.db import rows_matched
from app.models import ADAPTER_WORKFLOWS, Adapter, WorkflowRun, WorkflowState, utcnow
from app.services.wakeups import wake_after_commit

log = logging.getLogger("tailor.workflows")

PENDING = (WorkflowState.queued, WorkflowState.running)
BROKER_DOWN = "The job queue could not be reached; try again in a moment."


@dataclass(frozen=True)
class Workflow:
    key: str  # "evaluation", "merged_export", "gguf_export"

    @property
    def state_name(self) -> str:
        return f"{self.key}_state"

    @property
    def error_name(self) -> str:
        return f"{self.key}_error"

    @property
    def state(self) -> InstrumentedAttribute:
        return getattr(Adapter, self.state_name)

    def state_of(self, adapter: Adapter) -> str | None:
        return getattr(adapter, self.state_name)


WORKFLOWS = {key: Workflow(key) for key in ADAPTER_WORKFLOWS}
EVALUATION = WORKFLOWS["evaluation"]
MERGED_EXPORT = WORKFLOWS["merged_export"]
GGUF_EXPORT = WORKFLOWS["gguf_export"]


def _move(
    db: Session,
    adapter_id: int,
    workflow: Workflow,
    when: ColumnElement[bool],
    state: WorkflowState,
    error: str | None = None,
    **values: Any,
) -> bool:
    """Set the workflow's state (and error, and other columns) where `when` holds; True if it did."""
    statement = (
        update(Adapter)
        .where(Adapter.id == adapter_id, when)
        .values({workflow.state_name: state, workflow.error_name: error, **values})
        .execution_options(synchronize_session=False)
    )
    return rows_matched(db, statement) == 1


def request(db: Session, adapter: Adapter, workflow: Workflow) -> bool:
    """Mark the workflow queued unless it is queued or running already; True when it was marked
    (the caller then wakes a worker). The adapter shows the state either way."""
    column = workflow.state
    queued = _move(db, adapter.id, workflow, or_(column.is_(None), column.not_in(PENDING)), WorkflowState.queued)
    db.refresh(adapter, [workflow.state_name, workflow.error_name])
    return queued


def request_and_wake(db: Session, adapter: Adapter, workflow: Workflow, send: Callable[[int], object]) -> bool:
    """`request`, then `send(adapter_id)` once the transaction commits; if the broker cannot be
    reached the workflow ends failed with a plain reason, so the page offers it again."""
    if not request(db, adapter, workflow):
        log.info("adapter %s: %s is %s already; not requested again", adapter.id, workflow.key, workflow.state_of(adapter))
        return False
    adapter_id = adapter.id
    wake_after_commit(db, lambda session: _send_or_fail(session, adapter_id, workflow, send))
    return True


def _send_or_fail(session: Session, adapter_id: int, workflow: Workflow, send: Callable[[int], object]) -> None:
    try:
        send(adapter_id)
    except Exception:  # noqa: BLE001 - any broker failure: the person can ask again
        log.warning("adapter %s: could not send the %s wake-up", adapter_id, workflow.key, exc_info=True)
        _move(session, adapter_id, workflow, workflow.state == WorkflowState.queued, WorkflowState.failed, BROKER_DOWN)


def start(db: Session, adapter_id: int, workflow: Workflow) -> bool:
    """-> running, unless it is running already (a duplicate wake-up). Any other state may start,
    so the worker's functions can also be called directly (tests, a shell)."""
    column = workflow.state
    if not _move(db, adapter_id, workflow, or_(column.is_(None), column != WorkflowState.running), WorkflowState.running):
        return False
    workspace_id = db.scalar(select(Adapter.workspace_id).where(Adapter.id == adapter_id))
    db.add(WorkflowRun(workspace_id=workspace_id, adapter_id=adapter_id, workflow=workflow.key, started_at=utcnow()))
    db.flush()
    return True


def finish(db: Session, adapter_id: int, workflow: Workflow, error: str | None = None, **values: Any) -> bool:
    """running -> done, or failed with `error` (a sentence for the page); other columns in `values`."""
    state = WorkflowState.failed if error else WorkflowState.done
    if not _move(db, adapter_id, workflow, workflow.state == WorkflowState.running, state, error, **values):
        return False
    db.execute(
        update(WorkflowRun)
        .where(WorkflowRun.adapter_id == adapter_id, WorkflowRun.workflow == workflow.key, WorkflowRun.ended_at.is_(None))
        .values(ended_at=utcnow(), outcome=str(state))
        .execution_options(synchronize_session=False)
    )
    return True
