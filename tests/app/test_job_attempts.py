"""Attempt history and the three-strikes rule: a job whose worker keeps dying at the same point is
stopped as failed with a plain reason instead of being handed from worker to worker forever."""

from __future__ import annotations

from datetime import timedelta

import pytest

from app.db import session_scope
from app.models import Dataset, Job, JobAttempt, User, utcnow
from app.services import attempts, dataset_ingest, jobs
from app.services.artifacts import get_artifact_store
from tests.app.helpers import SAMPLE_CSV, bearer
from tests.conftest import sign_in


def _history(*ends: tuple[str, int]) -> list[JobAttempt]:
    return [
        JobAttempt(number=i + 1, worker_name="w", started_step=0, outcome=outcome, ended_step=step)
        for i, (outcome, step) in enumerate(ends)
    ]


@pytest.mark.parametrize(
    "ends, gives_up",
    [
        ((("lost", 57), ("lost", 57), ("lost", 57)), True),  # killed at the same step each time
        ((("lost", 0), ("lost", 0), ("lost", 0)), True),  # dies while loading the model
        ((("lost", 50), ("lost", 57), ("lost", 40)), False),  # got further: worth another try
        ((("lost", 10), ("lost", 20), ("lost", 30)), False),  # progressing despite reboots
        ((("lost", 57), ("lost", 57)), False),  # only twice
        ((("failed", 5), ("lost", 5), ("lost", 5)), False),
    ],
)
def test_three_deaths_without_progress_mean_giving_up(ends, gives_up):
    assert attempts.lost_the_same_way(_history(*ends)) is gives_up


@pytest.fixture
def queued_job(make_user, settings, tiny_model_dir):
    user_id, email, password, token = make_user("attempts")
    with session_scope() as db, open(SAMPLE_CSV, "rb") as f:
        user = db.get(User, user_id)
        dataset, _ = dataset_ingest.ingest_upload(
            db, get_artifact_store(), workspace_id=user.workspace_id, user_id=user.id, filename="northwind.csv", source=f, limit_bytes=10**8
        )
        job = jobs.submit_job(
            db,
            settings,
            get_artifact_store(),
            workspace_id=user.workspace_id,
            user_id=None,
            dataset=db.get(Dataset, dataset.id),
            task="instruction",
            column_mapping={"prompt": "question", "response": "answer"},
            base_model="tiny-llama",
            technique="lora",
            params={"max_steps": 50},
        )
        return job.id, email, password, token


def _worker_dies_at(job_id: int, worker: str, step: int, settings) -> list[int]:
    """Claim as `worker`, progress to `step`, go silent, and let the reconciler look."""
    with session_scope() as db:
        assert jobs.claim_job(db, job_id, worker)
        db.get(Job, job_id).step = step
        db.get(Job, job_id).heartbeat_at = utcnow() - timedelta(seconds=settings.heartbeat_stale_seconds + 5)
    with session_scope() as db:
        _, dead = jobs.jobs_needing_wakeup(db, settings, queued_grace_seconds=3600)
    return dead


def test_a_job_killed_three_times_at_the_same_step_stops_as_failed_with_its_history(queued_job, settings, client):
    job_id, email, password, token = queued_job
    assert job_id in _worker_dies_at(job_id, "gpu-1", 12, settings)  # back in the queue, resumes
    assert job_id in _worker_dies_at(job_id, "gpu-2", 12, settings)
    with session_scope() as db:
        assert db.get(Job, job_id).status == "queued"
    assert job_id not in _worker_dies_at(job_id, "gpu-1", 12, settings)  # third time: not re-sent

    with session_scope() as db:
        job = db.get(Job, job_id)
        assert job.status == "failed" and job.finished_at is not None
        assert "stopped 3 times in a row at step 12" in job.error and "memory" in job.error
        history = attempts.attempts_for(db, job_id)
    assert [(a.number, a.worker_name, a.outcome, a.ended_step) for a in history] == [
        (1, "gpu-1", "lost", 12),
        (2, "gpu-2", "lost", 12),
        (3, "gpu-1", "lost", 12),
    ]

    detail = client.get(f"/api/v1/jobs/{job_id}", headers=bearer(token)).json()
    assert [a["outcome"] for a in detail["attempts"]] == ["lost", "lost", "lost"]
    sign_in(client, email, password)
    page = client.get(f"/jobs/{job_id}").text
    assert 'id="job-attempts"' in page and page.count("worker stopped responding") == 3 and "gpu-2" in page


def test_each_attempt_is_closed_with_how_the_job_ended(queued_job, settings):
    job_id, *_ = queued_job
    _worker_dies_at(job_id, "gpu-1", 7, settings)
    with session_scope() as db:
        assert jobs.claim_job(db, job_id, "gpu-2")
        db.get(Job, job_id).step = 50
        jobs.finish_job(db, job_id, jobs.JobStatus.succeeded, result={})
    with session_scope() as db:
        history = attempts.attempts_for(db, job_id)
    assert [(a.worker_name, a.started_step, a.ended_step, a.outcome) for a in history] == [
        ("gpu-1", 0, 7, "lost"),
        ("gpu-2", 7, 50, "succeeded"),
    ]
    assert all(a.ended_at is not None for a in history)
