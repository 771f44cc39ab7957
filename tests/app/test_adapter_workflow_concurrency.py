"""The adapter's workflow states under concurrency: tasks finishing together lose nothing, a second
request while one is pending starts nothing, and wake-ups leave only after their row is committed.

Real threads, each with its own session on the test database (PostgreSQL with
TAILOR_TEST_DATABASE=postgresql, else SQLite).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from app.db import get_sessionmaker, session_scope
from app.models import Adapter, Workspace
from app.services import adapter_workflows
from app.services.adapter_workflows import BROKER_DOWN, EVALUATION, GGUF_EXPORT, MERGED_EXPORT
from app.services.adapters import request_evaluation
from app.services.evaluations import record_summary
from app.services.exports import request_merged_export
from app.services.wakeups import pending_wakeups, wake_after_commit

HOLD_SECONDS = 0.3  # one task keeps its transaction open this long after writing, so the others overlap it


@pytest.fixture
def adapter_id() -> int:
    with session_scope() as db:
        workspace = Workspace(name="workflows")
        db.add(workspace)
        db.flush()
        adapter = Adapter(
            workspace_id=workspace.id,
            name="a",
            technique="lora",
            base_model="tiny-llama",
            storage_key="k",
            metrics={"validation_loss": 1.5},
        )
        db.add(adapter)
        db.flush()
        return adapter.id


@pytest.fixture
def sent(monkeypatch) -> list[tuple[str, int]]:
    """The wake-ups sent, instead of messages to the broker."""
    messages: list[tuple[str, int]] = []
    monkeypatch.setattr("app.queue.send_evaluate", lambda adapter_id, queue="gpu": messages.append(("evaluate", adapter_id)))
    monkeypatch.setattr("app.queue.send_export", lambda adapter_id: messages.append(("export", adapter_id)))
    return messages


def _together(*tasks):
    """Run each task(barrier) in its own thread at the same time; their results, in order."""
    barrier = threading.Barrier(len(tasks))
    with ThreadPoolExecutor(len(tasks)) as pool:
        return [f.result(timeout=60) for f in [pool.submit(task, barrier) for task in tasks]]


def _finishing(adapter_id: int, write, hold: bool):
    """A worker task's last transaction: it has read the adapter (as every task does first), all
    tasks then write at once, and one keeps its transaction open a while before committing."""

    def task(barrier: threading.Barrier) -> None:
        with get_sessionmaker()() as db:
            db.get(Adapter, adapter_id).metrics  # noqa: B018 - loaded before the others write, as the tasks do
            barrier.wait()
            write(db)
            if hold:
                time.sleep(HOLD_SECONDS)
            db.commit()

    return task


@pytest.mark.parametrize("holder", ["evaluation", "merged", "gguf"])
def test_evaluation_and_exports_finishing_together_lose_no_update(adapter_id, holder):
    with session_scope() as db:
        for workflow in (EVALUATION, MERGED_EXPORT, GGUF_EXPORT):
            assert adapter_workflows.start(db, adapter_id, workflow)
    summary = {"rows": 4, "adapter": {"exact_match": {"value": 0.5}}}

    def evaluation_done(db):
        record_summary(db, adapter_id, summary)
        assert adapter_workflows.finish(db, adapter_id, EVALUATION)

    def merged_done(db):
        assert adapter_workflows.finish(db, adapter_id, MERGED_EXPORT)

    def gguf_failed(db):
        assert adapter_workflows.finish(db, adapter_id, GGUF_EXPORT, "GgufExportError: no tensors", gguf_export_bytes=None)

    _together(
        _finishing(adapter_id, evaluation_done, holder == "evaluation"),
        _finishing(adapter_id, merged_done, holder == "merged"),
        _finishing(adapter_id, gguf_failed, holder == "gguf"),
    )
    with session_scope() as db:
        adapter = db.get(Adapter, adapter_id)
        assert adapter.metrics == {"validation_loss": 1.5, "evaluation": summary}  # only measurements, none lost
        assert (adapter.evaluation_state, adapter.evaluation_error) == ("done", None)
        assert (adapter.merged_export_state, adapter.merged_export_error) == ("done", None)
        assert (adapter.gguf_export_state, adapter.gguf_export_error) == ("failed", "GgufExportError: no tensors")


def test_a_second_request_while_one_is_pending_starts_nothing(adapter_id, sent):
    def ask(barrier: threading.Barrier) -> bool:
        with get_sessionmaker()() as db:
            adapter = db.get(Adapter, adapter_id)
            barrier.wait()
            asked = request_evaluation(db, adapter)
            time.sleep(0.1)  # both requests overlap
            db.commit()
            return asked

    assert sorted(_together(ask, ask)) == [False, True]
    assert sent == [("evaluate", adapter_id)]
    with session_scope() as db:
        adapter = db.get(Adapter, adapter_id)
        assert request_evaluation(db, adapter) is False and adapter.evaluation_state == "queued"
        assert adapter_workflows.start(db, adapter_id, EVALUATION)
        assert not adapter_workflows.start(db, adapter_id, EVALUATION)  # a duplicate wake-up runs nothing
    with session_scope() as db:
        assert request_evaluation(db, db.get(Adapter, adapter_id)) is False  # running: not asked again
    assert sent == [("evaluate", adapter_id)]
    with session_scope() as db:
        assert adapter_workflows.finish(db, adapter_id, EVALUATION)
        assert request_merged_export(db, db.get(Adapter, adapter_id)) is True
        assert request_merged_export(db, db.get(Adapter, adapter_id)) is False
        assert request_evaluation(db, db.get(Adapter, adapter_id)) is True  # done: may be asked for again
    assert sent == [("evaluate", adapter_id), ("export", adapter_id), ("evaluate", adapter_id)]


def test_a_wake_up_leaves_after_its_row_is_committed_and_never_after_a_rollback(adapter_id, sent):
    seen_by_worker = []
    with get_sessionmaker()() as db:
        adapter = db.get(Adapter, adapter_id)
        assert adapter_workflows.request(db, adapter, EVALUATION)
        wake_after_commit(db, lambda session: seen_by_worker.append(_state_elsewhere(adapter_id)))
        assert _state_elsewhere(adapter_id) is None and seen_by_worker == []
        db.commit()
        assert seen_by_worker == ["queued"]  # a worker woken now finds the row

        assert request_merged_export(db, db.get(Adapter, adapter_id))
        assert pending_wakeups(db) == 1
        db.rollback()
        assert pending_wakeups(db) == 0
        db.commit()
    assert sent == [] and _state_elsewhere(adapter_id, MERGED_EXPORT) is None


def test_an_unreachable_broker_leaves_the_workflow_failed_with_a_reason(adapter_id, monkeypatch):
    def broker_down(adapter_id, queue="gpu"):
        raise ConnectionError("redis is away")

    monkeypatch.setattr("app.queue.send_evaluate", broker_down)
    with session_scope() as db:
        assert request_evaluation(db, db.get(Adapter, adapter_id))
    with session_scope() as db:
        adapter = db.get(Adapter, adapter_id)
        assert (adapter.evaluation_state, adapter.evaluation_error) == ("failed", BROKER_DOWN)


def _state_elsewhere(adapter_id: int, workflow=EVALUATION) -> str | None:
    """The state as another connection (a worker) sees it."""
    with get_sessionmaker()() as other:
        return workflow.state_of(other.get(Adapter, adapter_id))
