"""Failures a worker meets on its own machine end the job with a plain reason, and the worker
takes the next job: a damaged base model, running out of memory."""

from __future__ import annotations

import os
import shutil

import pytest
import torch

from app.db import session_scope
from app.models import Job
from tests.worker.test_job_runner import _submit, sample_dataset  # noqa: F401 - a fixture
from worker.job_runner import describe_failure, run_training_job


@pytest.mark.parametrize("damage", ["truncated weights", "garbage weights", "broken config"])
def test_a_damaged_base_model_fails_the_job_plainly_and_the_worker_goes_on(sample_dataset, settings, tiny_model_dir, damage):
    damaged = settings.models_dir / f"tiny-damaged-{os.getpid()}"
    shutil.copytree(tiny_model_dir, damaged)
    try:
        doomed = _submit(*sample_dataset, settings, damaged.name, max_steps=2)  # accepted: the folder looks like a model
        weights = damaged / "model.safetensors"
        if damage == "truncated weights":  # e.g. a copy interrupted half-way
            weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
        elif damage == "garbage weights":
            weights.write_bytes(os.urandom(4096))
        else:
            (damaged / "config.json").write_text('{"model_type": "llama", ')
        assert run_training_job(doomed, "worker-a") == "failed"
        with session_scope() as db:
            error = db.get(Job, doomed).error
        assert f"The base model's files in {damaged.name} could not be read" in error
        assert "damaged or incomplete" in error and "Traceback" not in error and 'File "' not in error
    finally:
        shutil.rmtree(damaged, ignore_errors=True)
    # The same worker process takes the next job as if nothing happened.
    assert run_training_job(_submit(*sample_dataset, settings, max_steps=2), "worker-a") == "succeeded"


def test_running_out_of_memory_is_said_plainly():
    with pytest.raises(RuntimeError) as cpu:  # what torch raises when the machine cannot give the memory
        torch.empty(1 << 52, dtype=torch.uint8)
    assert describe_failure(cpu.value).startswith("The worker ran out of memory.")
    assert describe_failure(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")).startswith(
        "The worker ran out of memory."
    )
    assert describe_failure(MemoryError()).startswith("The worker ran out of memory.")
