"""A two-process job through the job runner (issue 13): a rank killed mid-training fails the attempt
on every rank within the timeout, the job goes back to the queue, and attempt 2 finishes from the
checkpoint with exactly one adapter."""

from __future__ import annotations

import os
import signal
import threading
import time
import zipfile

from sqlalchemy import func, select

from app.db import session_scope
from app.models import Adapter, Job, JobAttempt
from app.services.adapters import adapter_zip_path
from app.services.artifacts import get_artifact_store
from tests.worker.test_job_runner import _submit, sample_dataset  # noqa: F401 - a fixture
from worker.job_runner import checkpoint_key, run_training_job
from worker.reconcile import reconcile_jobs


def submit(workspace_id: int, dataset_id: int, settings, devices: str, **params) -> int:
    """A LoRA job on the tiny Llama over `devices` (the job runner tests' submit, batch 4, no dropout)."""
    return _submit(workspace_id, dataset_id, settings, devices=devices, **{"batch_size": 4, "dropout": 0.0, **params})


def wait_for_rank(job_id: int, rank: str, min_step: int, timeout: float = 300) -> int:
    """The pid of `rank` once the job has reached `min_step` (as its ranks report)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with session_scope() as db:
            job = db.get(Job, job_id)
            info = (job.ranks or {}).get(rank) or {}
            if info.get("pid") and job.step >= min_step:
                return int(info["pid"])
        time.sleep(0.2)
    raise AssertionError(f"rank {rank} of job {job_id} never reached step {min_step}")


def test_a_killed_rank_requeues_the_job_and_attempt_two_finishes_from_its_checkpoint(
    sample_dataset, settings, tiny_model_dir, monkeypatch, capfd
):
    monkeypatch.setattr(settings, "distributed_timeout_seconds", 30.0)
    monkeypatch.setattr(settings, "auto_evaluate", False)
    job_id = submit(*sample_dataset, settings, "2", max_steps=40, checkpoint_minutes=0.0001)
    outcome: list[str] = []
    thread = threading.Thread(target=lambda: outcome.append(run_training_job(job_id, "worker-a")))
    thread.start()
    pid = wait_for_rank(job_id, "1", min_step=3)
    os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    thread.join(timeout=120)
    assert outcome == ["queued"]
    logs = capfd.readouterr().err
    assert f"job={job_id} rank=0 training lora over 2 ranks (ddp)" in logs and f"job={job_id} rank=1 " in logs
    assert time.monotonic() - killed_at < settings.distributed_timeout_seconds  # rank 0 did not hang on the dead peer
    with session_scope() as db:
        job = db.get(Job, job_id)
        assert job.status == "queued" and "stopped without an error" in job.error
        attempt = db.scalar(select(JobAttempt).where(JobAttempt.job_id == job_id))
        assert attempt.outcome == "lost"
        stopped_at = job.step
    assert get_artifact_store().exists(checkpoint_key(job_id))  # kept for the next attempt
    assert 0 < stopped_at < 40

    assert job_id in reconcile_jobs(queued_grace_seconds=0)["resent"]  # the reconciler sends it again
    assert run_training_job(job_id, "worker-b") == "succeeded"
    with session_scope() as db:
        job = db.get(Job, job_id)
        assert job.attempt == 2 and job.step == 40 and job.result["resumed_from_step"] >= 3
        adapters = list(db.scalars(select(Adapter).where(Adapter.job_id == job_id)))
        assert len(adapters) == 1
        with zipfile.ZipFile(adapter_zip_path(get_artifact_store(), adapters[0])) as archive:
            assert set(archive.namelist()) == {"adapter_config.json", "adapter_model.safetensors", "README.md"}
        assert db.scalar(select(func.count()).select_from(JobAttempt).where(JobAttempt.job_id == job_id)) == 2
    assert not get_artifact_store().exists(checkpoint_key(job_id))
