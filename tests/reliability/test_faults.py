"""Fault tests on real processes: a real Redis of the tests' own, real Celery workers, the real
database. Nothing is lost and nothing runs twice."""

from __future__ import annotations

import time

import pytest
import redis
from celery import Celery
from sqlalchemy import func, select

from app.db import session_scope
from app.models import Adapter, Dataset, Job, User
from app.queue import TRAIN_TASK
from app.services import attempts, dataset_ingest, jobs
from app.services.artifacts import get_artifact_store
from tests.app.helpers import SAMPLE_CSV


@pytest.fixture
def dataset_id(make_user) -> int:
    user_id, *_ = make_user("faults")
    with session_scope() as db, open(SAMPLE_CSV, "rb") as f:
        user = db.get(User, user_id)
        dataset, _ = dataset_ingest.ingest_upload(
            db, get_artifact_store(), workspace_id=user.workspace_id, user_id=user.id, filename="northwind.csv", source=f, limit_bytes=10**8
        )
        return dataset.id


def submit(dataset_id: int, settings, **params) -> int:
    with session_scope() as db:
        dataset = db.get(Dataset, dataset_id)
        job = jobs.submit_job(
            db,
            settings,
            get_artifact_store(),
            workspace_id=dataset.workspace_id,
            user_id=None,
            dataset=dataset,
            task="instruction",
            column_mapping={"prompt": "question", "response": "answer"},
            base_model="tiny-llama",
            technique="lora",
            params={"learning_rate": 3e-3, **params},
        )
        return job.id


def wake(redis_url: str, job_id: int) -> None:
    producer = Celery(broker=redis_url)
    producer.send_task(TRAIN_TASK, args=[job_id], queue="gpu")
    with session_scope() as db:
        jobs.mark_enqueued(db, job_id)


def job_state(job_id: int) -> Job:
    with session_scope() as db:
        job = db.get(Job, job_id)
        db.expunge(job)
        return job


def wait_until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def adapter_count(job_id: int) -> int:
    with session_scope() as db:
        return db.scalar(select(func.count()).select_from(Adapter).where(Adapter.job_id == job_id))


def test_a_killed_worker_job_is_taken_over_and_finished_by_another(workers, own_redis, dataset_id, settings):
    job_id = submit(dataset_id, settings, epochs=1, batch_size=2)
    workers.start("first@tests")
    wake(own_redis.url, job_id)
    wait_until(lambda: job_state(job_id).step >= 3, 120, "training to make progress")
    workers.kill("first@tests")
    assert job_state(job_id).status == "running"  # orphaned: nobody will finish it by itself
    # Early acknowledgement (worker/celery_app.py): the wake-up was acked on receipt, so Redis
    # holds nothing that its visibility_timeout could hand to a second worker hours later, in
    # the middle of the resumed run; bringing the job back is the reconciler's work alone.
    broker = redis.Redis.from_url(own_redis.url)
    assert broker.hlen("unacked") == 0, broker.hgetall("unacked")

    # A second worker that considers 2 s of silence a dead worker reconciles on start-up.
    time.sleep(2.5)
    workers.start("second@tests", TAILOR_HEARTBEAT_STALE_SECONDS=2)
    done = wait_until(lambda: (j := job_state(job_id)).is_finished and j, 240, "the job to finish on the second worker")
    assert done.status == "succeeded", done.error
    assert done.attempt == 2 and done.worker_name == "second@tests"
    assert adapter_count(job_id) == 1
    with session_scope() as db:  # the job page's attempt history
        history = [(a.worker_name, a.outcome, a.started_step > 0) for a in attempts.attempts_for(db, job_id)]
    assert history == [("first@tests", "lost", False), ("second@tests", "succeeded", True)]
    # Structured logs: the worker's lines about this job carry its id.
    log = (workers.log_dir / "second@tests.log").read_text()
    assert f"job={job_id} job {job_id}: succeeded" in log


def test_jobs_complete_after_redis_restarts(workers, own_redis, dataset_id, settings):
    running = submit(dataset_id, settings, epochs=2, batch_size=4)
    queued = [submit(dataset_id, settings, max_steps=3) for _ in range(2)]
    workers.start("steady@tests", beat=True, TAILOR_RECONCILE_INTERVAL_SECONDS=2, TAILOR_RECONCILE_GRACE_SECONDS=3)
    for job_id in (running, *queued):
        wake(own_redis.url, job_id)
    wait_until(lambda: job_state(running).status == "running", 120, "the first job to start")

    own_redis.stop()  # the queued jobs' messages die with it: this Redis keeps nothing on disk
    time.sleep(2)
    own_redis.start()

    for job_id in (running, *queued):
        done = wait_until(lambda job_id=job_id: (j := job_state(job_id)).is_finished and j, 300, f"job {job_id} to finish")
        assert done.status == "succeeded", done.error
        assert done.attempt == 1
        assert adapter_count(job_id) == 1


def test_a_busy_worker_leaves_the_next_job_to_a_free_one(workers, own_redis, dataset_id, settings):
    long_job = submit(dataset_id, settings, epochs=1, batch_size=2)
    short_job = submit(dataset_id, settings, max_steps=1, batch_size=2, validation_fraction=0.01)
    workers.start("busy@tests")
    wake(own_redis.url, long_job)
    wait_until(lambda: job_state(long_job).status == "running", 120, "the long job to start")
    wake(own_redis.url, short_job)
    time.sleep(3)  # time enough for a prefetching worker to grab the message
    broker = redis.Redis.from_url(own_redis.url)
    assert broker.hlen("unacked") == 0  # not parked inside the busy worker
    assert broker.llen("gpu") >= 1  # still in Redis, for whoever is free

    workers.start("free@tests")
    done = wait_until(lambda: (j := job_state(short_job)).is_finished and j, 180, "the short job on the free worker")
    assert done.status == "succeeded" and done.worker_name == "free@tests"
    assert job_state(long_job).status == "running"  # it did not wait for the long job


def test_thirty_jobs_on_two_workers_all_finish_none_twice_in_fair_order(workers, own_redis, dataset_id, settings):
    job_ids = [submit(dataset_id, settings, max_steps=1, batch_size=2, validation_fraction=0.01) for _ in range(30)]
    workers.start("w1@tests")
    workers.start("w2@tests")
    for job_id in job_ids:
        wake(own_redis.url, job_id)
        wake(own_redis.url, job_id) if job_id % 5 == 0 else None  # some duplicate wake-ups too

    finished = wait_until(lambda: all(job_state(j).is_finished for j in job_ids) and [job_state(j) for j in job_ids], 600, "all 30 jobs")
    assert all(j.status == "succeeded" for j in finished), [(j.id, j.error) for j in finished if j.status != "succeeded"]
    assert all(j.attempt == 1 for j in finished), "a job was claimed twice"
    assert all(adapter_count(j.id) == 1 for j in finished)
    assert {j.worker_name for j in finished} == {"w1@tests", "w2@tests"}
    # FIFO with two workers: job i never starts after job i+2 (each worker takes the oldest).
    starts = [j.started_at for j in finished]
    assert all(starts[i] <= starts[i + 2] for i in range(len(starts) - 2))
