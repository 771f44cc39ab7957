"""Fair dispatch with a real worker process: ONE Celery worker (concurrency 1), workspace A queues
many tiny jobs, then workspace B queues one. Without fair dispatch B's job would start last, after
all of A's; with it, it starts as soon as the worker finishes the job in hand. Every job runs once.
And a job held back by its workspace's running-jobs limit starts as soon as the workspace's running
job ends, not when the reconciler next comes by."""

from __future__ import annotations

import time

import pytest

from app.db import session_scope
from app.models import Dataset, Job, JobAttempt, JobStatus, User
from app.services import jobs, quotas
from app.services.artifacts import get_artifact_store
from tests.app.helpers import bearer, upload
from tests.conftest import harness

pytestmark = pytest.mark.usefixtures("worker_process")

A_JOBS = 5
# Ten short rows: the job's cost is the model load and one step, not the data.
TINY_CSV = ("question,answer\n" + "".join(f"What is {n} plus one?,{n + 1}\n" for n in range(10))).encode()
TINY = {
    "column_mapping": {"prompt": "question", "response": "answer"},
    "base_model": "tiny-llama",
    "technique": "lora",
    "params": {"max_steps": 1, "batch_size": 2, "max_length": 32, "eval_steps": 0},
}


def _queue(client, token: str, dataset_id: int) -> int:
    response = client.post("/api/v1/jobs", headers=bearer(token), json={"dataset_id": dataset_id, **TINY, "name": "tiny"})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def test_one_worker_starts_a_second_workspaces_job_before_the_first_workspaces_queue_drains(client, make_user):
    a, b = make_user("fair-a"), make_user("fair-b")
    a_data = upload(client, a.token, TINY_CSV, "sums.csv").json()["id"]
    b_data = upload(client, b.token, TINY_CSV, "sums.csv").json()["id"]
    began = time.monotonic()
    a_jobs = [_queue(client, a.token, a_data) for _ in range(A_JOBS)]
    b_job = _queue(client, b.token, b_data)
    ids = [*a_jobs, b_job]

    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        states = {j["id"]: j["status"] for j in (client.get(f"/api/v1/jobs/{i}", headers=bearer(t)).json() for i, t in _owners(ids, a, b))}
        if all(s in ("succeeded", "failed", "cancelled") for s in states.values()):
            break
        time.sleep(0.5)
    took = time.monotonic() - began
    assert set(states.values()) == {"succeeded"}, states

    with session_scope() as db:
        attempts = db.query(JobAttempt).filter(JobAttempt.job_id.in_(ids)).order_by(JobAttempt.started_at, JobAttempt.id).all()
        order = [x.job_id for x in attempts]
        assert sorted(order) == sorted(ids)  # each job ran exactly once
        assert len({db.get(Job, i).worker_name for i in ids}) == 1  # all on the one worker
    position = order.index(b_job)
    print(f"start order {['B' if i == b_job else 'A' for i in order]}; all {len(ids)} jobs done in {took:.1f}s")
    # B's first job goes right after the job in hand (2nd), or one later if that one finished before B queued.
    assert position <= 2, order


def _owners(ids, a, b):
    return [(i, a.token if n < A_JOBS else b.token) for n, i in enumerate(ids)]


def test_a_job_held_back_by_the_running_limit_starts_as_soon_as_the_workspaces_running_job_ends(client, make_user, settings):
    """The test plays a second worker that holds the workspace's one running slot; the real worker,
    woken for the second job, finds the workspace at its limit and claims nothing. When the test's
    job ends (`jobs.finish_job`, as a worker ends one), the real worker starts the held-back job
    within seconds — without the wake-up on ending it would wait for the reconciler (60 s; the test
    worker runs no beat at all)."""
    owner = make_user("held")
    data = upload(client, owner.token, TINY_CSV, "sums.csv").json()["id"]
    with session_scope() as db:
        ws = db.get(User, owner.id).workspace_id
        quotas.set_overrides(db, ws, {"max_running_jobs": 1}, None)
        first = jobs.submit_job(
            db, settings, get_artifact_store(), workspace_id=ws, user_id=owner.id, dataset=db.get(Dataset, data), task="instruction",
            column_mapping=TINY["column_mapping"], base_model="tiny-llama", technique="lora", params=TINY["params"], name="elsewhere",
        )  # fmt: skip
        assert jobs.claim_job(db, first.id, "test-elsewhere")  # running on "another worker", no wake-up sent
        first_id = first.id
    held = _queue(client, owner.token, data)
    log = harness().data_dir / "worker.log"
    deadline = time.monotonic() + 60
    while f"woken for job {held}: no queued job may run now" not in log.read_text(errors="replace"):
        assert time.monotonic() < deadline, "the worker never took the held-back job's wake-up"
        time.sleep(0.2)
    time.sleep(1)
    with session_scope() as db:
        assert db.get(Job, held).status == JobStatus.queued  # held back by the limit

    ended = time.monotonic()
    with session_scope() as db:
        jobs.finish_job(db, first_id, JobStatus.succeeded)
    while (status := client.get(f"/api/v1/jobs/{held}", headers=bearer(owner.token)).json()["status"]) == "queued":
        assert time.monotonic() - ended < 30, "the held-back job did not start"
        time.sleep(0.1)
    started_after = time.monotonic() - ended
    print(f"held-back job started {started_after:.2f}s after the workspace's running job ended")
    assert started_after < 10  # the reconciler's period is 60 s
    deadline = time.monotonic() + 120
    while status not in ("succeeded", "failed", "cancelled") and time.monotonic() < deadline:
        time.sleep(0.5)
        status = client.get(f"/api/v1/jobs/{held}", headers=bearer(owner.token)).json()["status"]
    assert status == "succeeded"
