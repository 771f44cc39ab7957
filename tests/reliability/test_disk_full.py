"""A full disk while checkpointing ends the job with a plain reason, and the next job runs."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.reliability.test_faults import adapter_count, dataset_id, job_state, submit  # noqa: F401 (fixture)
from worker.job_runner import run_training_job


@pytest.fixture
def tiny_checkpoint_disk(settings):
    """A 64 KB tmpfs over the artifact store's work area, where checkpoints go."""
    work = settings.artifacts_dir / "work"
    work.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(work)], capture_output=True, text=True)
    if mounted.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail(f"CI runs as root and must be able to mount a tmpfs: {mounted.stderr}")
        pytest.skip(f"mounting a small tmpfs needs root: {mounted.stderr.strip()}")
    yield work
    subprocess.run(["umount", "-l", str(work)], check=False)


def test_disk_full_during_checkpoint_fails_clearly_and_the_next_job_runs(tiny_checkpoint_disk, dataset_id, settings, tiny_model_dir):  # noqa: F811
    doomed = submit(dataset_id, settings, max_steps=20, checkpoint_minutes=0.0001, r=64, alpha=128)
    assert run_training_job(doomed, "disk-worker") == "failed"
    job = job_state(doomed)
    assert job.status == "failed" and "disk is full" in job.error
    assert adapter_count(doomed) == 0

    subprocess.run(["umount", "-l", str(tiny_checkpoint_disk)], check=True)
    healthy = submit(dataset_id, settings, max_steps=3)
    assert run_training_job(healthy, "disk-worker") == "succeeded"
    assert adapter_count(healthy) == 1
