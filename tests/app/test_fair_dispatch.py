"""Fair dispatch (app/services/dispatch.py) on the database alone: the order a worker takes queued
jobs in across workspaces, the running-jobs quota, and that concurrent claims never take a job
twice. Each test uses a queue name of its own, so queued rows of other tests do not take part.
The same with a real worker process and real training: tests/worker/test_fair_dispatch_worker.py."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from app.db import get_sessionmaker, session_scope
from app.models import Job, JobStatus, Workspace
from app.services import jobs, quotas
from app.services.dispatch import claim_next_job


@pytest.fixture
def queue_name() -> str:
    return f"fair-{uuid.uuid4().hex[:8]}"


def _workspace(db, name: str) -> int:
    workspace = Workspace(name=name)
    db.add(workspace)
    db.flush()
    return workspace.id


def _queue_jobs(db, workspace_id: int, queue_name: str, n: int) -> list[int]:
    ids = []
    for i in range(n):
        job = Job(
            workspace_id=workspace_id, name=f"j{i}", task="instruction", column_mapping={}, base_model="tiny-llama",
            technique="lora", params={}, status=JobStatus.queued, queue=queue_name,
        )  # fmt: skip
        db.add(job)
        db.flush()
        ids.append(job.id)
    return ids


def _run_one(settings, queue_name: str) -> int | None:
    """One worker taking its next job and finishing it."""
    with session_scope() as db:
        job_id = claim_next_job(db, settings, "worker-1", queue_name)
    if job_id is not None:
        with session_scope() as db:
            jobs.finish_job(db, job_id, JobStatus.succeeded)
    return job_id


def test_one_worker_takes_a_second_workspaces_first_job_right_after_the_job_it_is_running(settings, queue_name):
    with session_scope() as db:
        a, b, c = (_workspace(db, n) for n in "abc")
        a_jobs = _queue_jobs(db, a, queue_name, 6)  # A queues first, and many
        b_jobs = _queue_jobs(db, b, queue_name, 1)
        c_jobs = _queue_jobs(db, c, queue_name, 2)
    order = [_run_one(settings, queue_name) for _ in range(10)]
    # Round robin: A (oldest waiting), then B and C, who have not had a turn, then A and C alternate.
    assert order == [a_jobs[0], b_jobs[0], c_jobs[0], a_jobs[1], c_jobs[1], *a_jobs[2:], None]


def test_a_workspace_at_its_running_quota_waits_while_others_run(settings, queue_name):
    with session_scope() as db:
        a, b = _workspace(db, "a"), _workspace(db, "b")
        a_jobs = _queue_jobs(db, a, queue_name, 3)
        b_jobs = _queue_jobs(db, b, queue_name, 1)
        quotas.set_overrides(db, a, {"max_running_jobs": 1}, None)
    with session_scope() as db:
        assert claim_next_job(db, settings, "w1", queue_name) == a_jobs[0]
    with session_scope() as db:
        assert claim_next_job(db, settings, "w2", queue_name) == b_jobs[0]  # A has its one running job
    with session_scope() as db:
        assert claim_next_job(db, settings, "w3", queue_name) is None  # only A's jobs wait, and A is at its quota
    with session_scope() as db:
        jobs.finish_job(db, a_jobs[0], JobStatus.succeeded)
    with session_scope() as db:
        assert claim_next_job(db, settings, "w3", queue_name) == a_jobs[1]
        assert db.get(Job, a_jobs[2]).status == JobStatus.queued  # waiting, not refused


def test_cancelled_jobs_are_not_taken(settings, queue_name):
    with session_scope() as db:
        a = _workspace(db, "a")
        first, second = _queue_jobs(db, a, queue_name, 2)
        jobs.request_cancel(db, db.get(Job, first))
    assert [_run_one(settings, queue_name) for _ in range(2)] == [second, None]


def test_workers_claiming_at_once_never_take_a_job_twice_and_leave_none(settings, queue_name):
    with session_scope() as db:
        ids = [i for name in "abc" for i in _queue_jobs(db, _workspace(db, name), queue_name, 3)]
    barrier = threading.Barrier(12)

    def worker(n: int) -> int | None:
        with get_sessionmaker()() as db:
            barrier.wait()
            claimed = claim_next_job(db, settings, f"worker-{n}", queue_name)
            db.commit()
            return claimed

    with ThreadPoolExecutor(12) as pool:
        claimed = list(pool.map(worker, range(12)))
    taken = [c for c in claimed if c is not None]
    assert sorted(taken) == sorted(ids) and claimed.count(None) == 3
    with session_scope() as db:
        assert {db.get(Job, i).status for i in ids} == {JobStatus.running}
        assert {db.get(Job, i).attempt for i in ids} == {1}


def test_a_wake_up_that_took_another_job_is_sent_again_for_its_own(settings, queue_name, monkeypatch):
    """A waiting job always has a wake-up out, even when the job taken had none of its own."""
    from app import queue

    sent: list[int] = []
    real = queue.send_train
    monkeypatch.setattr(queue, "send_train", lambda job_id, q: (sent.append(job_id), real(job_id, q)))
    with session_scope() as db:
        a, b = _workspace(db, "a"), _workspace(db, "b")
        a_jobs = _queue_jobs(db, a, queue_name, 2)
        b_jobs = _queue_jobs(db, b, queue_name, 1)
    with session_scope() as db:
        assert claim_next_job(db, settings, "w", queue_name, woken_for=a_jobs[0]) == a_jobs[0]
    assert sent == []  # it took its own job
    with session_scope() as db:
        jobs.finish_job(db, a_jobs[0], JobStatus.succeeded)
    with session_scope() as db:
        assert claim_next_job(db, settings, "w", queue_name, woken_for=a_jobs[1]) == b_jobs[0]  # B's turn
    assert sent == [a_jobs[1]]  # A's second job is woken again, after the commit
    with session_scope() as db:
        assert db.get(Job, a_jobs[1]).enqueued_at is not None
        jobs.finish_job(db, b_jobs[0], JobStatus.succeeded)
    with session_scope() as db:
        assert claim_next_job(db, settings, "w", queue_name, woken_for=b_jobs[0]) == a_jobs[1]
    assert sent == [a_jobs[1]]  # B's job is not waiting: nothing to send again


@pytest.mark.parametrize("ending", [JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled])
def test_a_job_ending_wakes_the_job_its_workspaces_running_limit_held_back(settings, queue_name, monkeypatch, ending):
    """Without this the held-back job would wait for the reconciler (up to a minute)."""
    from app import queue

    sent: list[int] = []
    real = queue.send_train
    monkeypatch.setattr(queue, "send_train", lambda job_id, q: (sent.append(job_id), real(job_id, q)))
    with session_scope() as db:
        a, b = _workspace(db, "a"), _workspace(db, "b")
        first, held = _queue_jobs(db, a, queue_name, 2)
        [b_job] = _queue_jobs(db, b, queue_name, 1)
        quotas.set_overrides(db, a, {"max_running_jobs": 1}, None)
    with session_scope() as db:
        assert claim_next_job(db, settings, "w1", queue_name) == first
        assert claim_next_job(db, settings, "w2", queue_name) == b_job
    with session_scope() as db:
        assert claim_next_job(db, settings, "w3", queue_name, woken_for=held) is None  # held back: its wake-up is used up
    assert sent == []
    with session_scope() as db:
        jobs.finish_job(db, b_job, JobStatus.succeeded)  # B has no running limit: nothing to wake
    assert sent == []
    with session_scope() as db:
        jobs.finish_job(db, first, ending, error="stopped" if ending == JobStatus.failed else None)
        assert sent == []  # only once committed
    assert sent == [held]
    with session_scope() as db:
        assert db.get(Job, held).enqueued_at is not None
        assert claim_next_job(db, settings, "w3", queue_name, woken_for=held) == held
    with session_scope() as db:
        jobs.finish_job(db, first, JobStatus.succeeded)  # no longer running: not a second ending, no second wake-up
    assert sent == [held]
