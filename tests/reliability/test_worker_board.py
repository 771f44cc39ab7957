"""Workers report themselves: the status board shows device, queues, current job and liveness."""

from __future__ import annotations

import time

from app.db import session_scope
from app.models import Dataset
from app.services import jobs
from app.services.workers import worker_board
from tests.app.helpers import bearer
from tests.reliability.test_faults import dataset_id, job_state, submit, wait_until, wake  # noqa: F401 (fixture)


def _board_entry(client, token, name):
    return next((w for w in client.get("/api/v1/workers", headers=bearer(token)).json()["workers"] if w["name"] == name), None)


def _admin_token(make_user) -> str:
    from app.models import User

    made = make_user("board-admin")
    with session_scope() as db:
        db.get(User, made.id).is_admin = True
    return made.token


def test_the_board_shows_a_worker_idle_busy_then_offline(workers, own_redis, dataset_id, settings, client, make_user):  # noqa: F811
    with session_scope() as db:
        workspace_id = db.get(Dataset, dataset_id).workspace_id
    _, _, _, stranger_token = make_user("stranger")
    admin_token = _admin_token(make_user)
    workers.start("board@tests")
    idle = wait_until(lambda: _board_entry(client, admin_token, "board@tests"), 30, "the worker to report")
    assert idle["state"] == "idle" and idle["queues"] == ["cpu", "gpu", "inference"] and idle["device"].startswith("cpu")
    assert idle["device_memory_bytes"] > 0

    job_id = submit(dataset_id, settings, epochs=3, batch_size=2)
    wake(own_redis.url, job_id)
    wait_until(lambda: job_state(job_id).status == "running", 60, "the job to start")
    with session_scope() as db:
        mine = next(w for w in worker_board(db, workspace_id) if w.name == "board@tests")
    assert mine.state == "busy" and mine.current_job_id == job_id
    # An administrator of another workspace sees that the worker is busy, not whose job it runs.
    other = _board_entry(client, admin_token, "board@tests")
    assert other["state"] == "busy" and other["current_job_id"] is None and "another workspace" in other["current_job_name"]
    # Someone who is not an administrator sees counts only, no machine names.
    stranger = client.get("/api/v1/workers", headers=bearer(stranger_token)).json()
    assert stranger["workers"] == [] and stranger["counts"]["busy"] >= 1

    workers.kill("board@tests")
    time.sleep(1.5)
    with session_scope() as db:
        gone = next(w for w in worker_board(db, workspace_id, stale_after_seconds=1) if w.name == "board@tests")
    assert gone.state == "offline"
    with session_scope() as db:  # no orphan left running for later tests' reconcilers
        jobs.finish_job(db, job_id, "failed", error="worker killed by the test")


def test_a_worker_stopped_cleanly_shows_as_stopped(workers, client, make_user):
    token = _admin_token(make_user)
    workers.start("polite@tests")
    wait_until(lambda: _board_entry(client, token, "polite@tests"), 30, "the worker to report")
    workers.stop_all()
    assert _board_entry(client, token, "polite@tests")["state"] == "stopped"
