"""A job from claim to outcome, in-process, on the real database and the tiny model."""

from __future__ import annotations

import zipfile
from datetime import timedelta

import pytest
import redis
from sqlalchemy import func, select

from app.db import session_scope
from app.models import Adapter, Dataset, Job, MetricPoint, ThroughputMeasurement, utcnow
from app.services import dataset_ingest, jobs
from app.services.adapters import adapter_zip_path
from app.services.artifacts import get_artifact_store
from tests.app.helpers import SAMPLE_CSV
from worker.job_runner import run_training_job
from worker.reconcile import reconcile_jobs


@pytest.fixture
def sample_dataset(make_user) -> tuple[int, int]:
    """(workspace_id, dataset_id) of a fresh user's upload of the sample CSV."""
    user_id, *_ = make_user("runner")
    with session_scope() as db, open(SAMPLE_CSV, "rb") as f:
        from app.models import User

        user = db.get(User, user_id)
        dataset, _ = dataset_ingest.ingest_upload(
            db, get_artifact_store(), workspace_id=user.workspace_id, user_id=user.id, filename="northwind.csv", source=f, limit_bytes=10**8
        )
        return user.workspace_id, dataset.id


def _submit(workspace_id: int, dataset_id: int, settings, base_model: str = "tiny-llama", devices: str = "1", **params) -> int:
    with session_scope() as db:
        job = jobs.submit_job(
            db,
            settings,
            get_artifact_store(),
            workspace_id=workspace_id,
            user_id=None,
            dataset=db.get(Dataset, dataset_id),
            task="instruction",
            column_mapping={"prompt": "question", "response": "answer"},
            base_model=base_model,
            technique="lora",
            params={"max_steps": 6, "learning_rate": 3e-3, **params},
            devices=devices,
        )
        return job.id


def test_a_job_runs_once_and_leaves_one_downloadable_adapter(sample_dataset, settings, tiny_model_dir, monkeypatch):
    monkeypatch.setattr(settings, "auto_evaluate", True)
    job_id = _submit(*sample_dataset, settings)
    assert run_training_job(job_id, "worker-a") == "succeeded"
    # A duplicate wake-up (a redelivered or re-sent message) finds nothing to claim.
    assert run_training_job(job_id, "worker-b") == "not-claimed"
    with session_scope() as db:
        job = db.get(Job, job_id)
        assert job.status == "succeeded" and job.attempt == 1 and job.worker_name == "worker-a"
        assert job.step == job.total_steps == 6 and job.result["steps"] == 6
        assert job.result["validation_loss"] is not None
        assert db.scalar(select(func.count()).select_from(MetricPoint).where(MetricPoint.job_id == job_id)) >= 1
        adapters = list(db.scalars(select(Adapter).where(Adapter.job_id == job_id)))
        assert len(adapters) == 1 and adapters[0].trainable_parameters > 0
        # Scoring next to the base model was asked for as soon as the adapter existed.
        assert adapters[0].evaluation_state in ("queued", "running", "done")
        # gpu-ready (issue 15): the worker's measured speed for this base model and technique is kept.
        measured = db.scalar(select(ThroughputMeasurement).where(ThroughputMeasurement.job_id == job_id))
        assert measured is not None and measured.worker_name == "worker-a" and measured.technique == "lora"
        assert measured.tokens == job.result["tokens_seen"] and measured.tokens_per_second > 0
        with zipfile.ZipFile(adapter_zip_path(get_artifact_store(), adapters[0])) as archive:
            names = set(archive.namelist())
            card = archive.read("README.md").decode()
    assert names == {"adapter_config.json", "adapter_model.safetensors", "README.md"}  # nothing else, no partial files
    assert "PeftModel.from_pretrained" in card and "tiny-llama" in card


def test_a_job_whose_dataset_vanished_fails_with_a_plain_reason(sample_dataset, settings, tiny_model_dir):
    job_id = _submit(*sample_dataset, settings)
    with session_scope() as db:
        get_artifact_store().delete(f"datasets/{db.get(Job, job_id).dataset_id}")
    assert run_training_job(job_id, "worker-a") == "failed"
    with session_scope() as db:
        job = db.get(Job, job_id)
        assert job.status == "failed" and "dataset of this job was deleted" in job.error
        assert db.scalar(select(func.count()).select_from(Adapter).where(Adapter.job_id == job_id)) == 0


def test_a_job_cancelled_while_queued_never_runs(sample_dataset, settings, tiny_model_dir):
    job_id = _submit(*sample_dataset, settings)
    with session_scope() as db:
        jobs.request_cancel(db, db.get(Job, job_id))
    assert run_training_job(job_id, "worker-a") == "not-claimed"
    with session_scope() as db:
        assert db.get(Job, job_id).status == "cancelled"


def test_reconciler_resends_lost_wakeups_and_requeues_dead_jobs(sample_dataset, settings, redis_url, tiny_model_dir):
    queue = "reconcile-test"  # a queue no worker consumes, so the messages stay to be counted
    lost = _submit(*sample_dataset, settings)
    dead = _submit(*sample_dataset, settings)
    with session_scope() as db:
        db.get(Job, lost).queue = queue
        db.get(Job, dead).queue = queue
        db.flush()
        assert jobs.claim_job(db, dead, "worker-that-died")
        db.get(Job, dead).heartbeat_at = utcnow() - timedelta(seconds=settings.heartbeat_stale_seconds + 60)
    broker = redis.Redis.from_url(redis_url)
    broker.delete(queue)

    outcome = reconcile_jobs(queued_grace_seconds=0)

    assert lost in outcome["resent"] and dead in outcome["resent"] and dead in outcome["requeued"]
    assert broker.llen(queue) == 2  # exactly our two: other jobs have queues of their own
    with session_scope() as db:
        revived = db.get(Job, dead)
        assert revived.status == "queued" and "stopped responding" in revived.error
        assert db.get(Job, lost).enqueued_at is not None
    # Nothing left to do: a second pass sends nothing new within the grace period.
    assert reconcile_jobs(queued_grace_seconds=3600)["resent"] == []
    broker.delete(queue)
    with session_scope() as db:  # leave no queued jobs for other tests' workers
        for job_id in (lost, dead):
            jobs.request_cancel(db, db.get(Job, job_id))


@pytest.mark.parametrize(
    "task, mapping",
    [
        ("classification", {"text": "question", "label": "category"}),
        ("text", {"text_columns": ["answer"]}),
    ],
)
def test_every_task_kind_runs_as_a_job_and_records_how_to_reproduce_it(sample_dataset, settings, tiny_model_dir, task, mapping):
    workspace_id, dataset_id = sample_dataset
    with session_scope() as db:
        job = jobs.submit_job(
            db,
            settings,
            get_artifact_store(),
            workspace_id=workspace_id,
            user_id=None,
            dataset=db.get(Dataset, dataset_id),
            task=task,
            column_mapping=mapping,
            base_model="tiny-llama",
            technique="lora",
            params={"max_steps": 3, "learning_rate": 3e-3, "eval_steps": 2},
            seed=7,
        )
        job_id = job.id
    assert run_training_job(job_id, "worker-a") == "succeeded"
    with session_scope() as db:
        job = db.get(Job, job_id)
        recipe = job.result["reproducibility"]
        assert recipe["task"] == task and recipe["seed"] == 7 and recipe["column_mapping"] == mapping
        assert len(recipe["data_sha256"]) == 64 and recipe["environment"]["packages"]["torch"]
        validation_points = list(
            db.scalars(select(MetricPoint).where(MetricPoint.job_id == job_id, MetricPoint.validation_loss.is_not(None)))
        )
        assert [p.step for p in validation_points] == [2, 3]
        if task == "classification":
            assert job.result["label_names"] and job.result["validation_accuracy"] is not None


def test_submit_refuses_the_same_column_as_text_and_label(sample_dataset, settings, tiny_model_dir):
    workspace_id, dataset_id = sample_dataset
    with session_scope() as db, pytest.raises(jobs.JobError) as info:
        jobs.submit_job(
            db,
            settings,
            get_artifact_store(),
            workspace_id=workspace_id,
            user_id=None,
            dataset=db.get(Dataset, dataset_id),
            task="classification",
            column_mapping={"text": "question", "label": "question"},
            base_model="tiny-llama",
            technique="lora",
            params={},
        )
    assert "different columns" in info.value.errors["label"]
