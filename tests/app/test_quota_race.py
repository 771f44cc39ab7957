"""The queued-jobs quota holds when submits arrive at the same moment: many threads, each with a
database session of its own, submit jobs of one workspace through `jobs.submit_job` at once; exactly
the limit's number are queued and the rest get the plain quota refusal. Runs on SQLite and, with
TAILOR_TEST_DATABASE=postgresql, on PostgreSQL (where the workspace row is locked FOR UPDATE)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from app.db import get_sessionmaker, session_scope
from app.models import Dataset, Job, JobStatus, User
from app.services import jobs, quotas
from app.services.artifacts import get_artifact_store
from tests.app.helpers import SAMPLE_CSV, upload

LIMIT, SUBMITS = 3, 12


def test_concurrent_submits_queue_exactly_the_limit_and_refuse_the_rest(client, make_user, settings, tiny_model_dir):
    owner = make_user("owner")
    dataset_id = upload(client, owner.token, SAMPLE_CSV.read_bytes(), "northwind.csv").json()["id"]
    with session_scope() as db:
        ws = db.get(User, owner.id).workspace_id
        quotas.set_overrides(db, ws, {"max_queued_jobs": LIMIT}, None)
    store = get_artifact_store()
    barrier = threading.Barrier(SUBMITS)

    def submit(n: int) -> str:
        with get_sessionmaker()() as db:
            dataset = db.get(Dataset, dataset_id)
            assert dataset is not None
            barrier.wait()
            try:
                jobs.submit_job(
                    db, settings, store, workspace_id=ws, user_id=owner.id, dataset=dataset, task="instruction",
                    column_mapping={"prompt": "question", "response": "answer"}, base_model="tiny-llama", technique="lora",
                    params={"max_steps": 1}, name=f"race {n}",
                )  # fmt: skip
                db.commit()
                return "queued"
            except quotas.QuotaExceeded as exc:
                db.rollback()
                assert exc.limit == "max_queued_jobs"
                return str(exc)

    try:
        with ThreadPoolExecutor(SUBMITS) as pool:
            outcomes = list(pool.map(submit, range(SUBMITS)))
        assert outcomes.count("queued") == LIMIT, outcomes
        refusal = (
            f"This workspace's quota of queued jobs is {LIMIT}, and it has {LIMIT} queued. Wait for some to start or cancel some, "
            "or ask an administrator for a larger quota."
        )
        assert [o for o in outcomes if o != "queued"] == [refusal] * (SUBMITS - LIMIT)
        with session_scope() as db:
            assert db.query(Job).filter(Job.workspace_id == ws).count() == LIMIT
    finally:
        with session_scope() as db:  # leave no queued rows for a worker of this test session
            db.query(Job).filter(Job.workspace_id == ws, Job.status == JobStatus.queued).update(
                {"status": JobStatus.cancelled, "cancel_requested": True}
            )
