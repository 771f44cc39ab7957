"""Estimates from the machine that runs the job: measured > calibrated > static (issue 15)."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import delete

from app.db import session_scope
from app.domain.estimates import Measured, WorkerClass, estimate_job
from app.models import Job, ThroughputMeasurement, WorkerNode
from app.services.job_estimates import preferred_worker
from app.services.throughput import measurements_of, record_job_throughput
from app.services.workers import DeviceInfo, record_worker_heartbeat

SMOLLM_LIKE = {
    "model_type": "llama", "hidden_size": 576, "num_hidden_layers": 30, "intermediate_size": 1536,
    "num_attention_heads": 9, "num_key_value_heads": 3, "vocab_size": 49152, "tie_word_embeddings": True,
}  # fmt: skip
PARAMS = {"batch_size": 8, "max_length": 512, "epochs": 2, "r": 16}


def _estimate(worker: WorkerClass, base_model: str | None = "demo"):
    return estimate_job(
        SMOLLM_LIKE, "lora", PARAMS, task="instruction", n_rows=220, tokens_per_row=80, worker=worker, base_model=base_model
    )


def test_the_most_specific_figure_wins():
    static = _estimate(WorkerClass("cpu", cores=2))
    calibrated = _estimate(WorkerClass("cpu", cores=2, calibrated_flops=2 * WorkerClass("cpu", cores=2).flops))
    assert static.source == "static" and calibrated.source == "calibrated"
    assert calibrated.seconds < static.seconds  # twice the measured speed: less time

    tokens_per_second = 100.0
    measured_worker = WorkerClass(
        "cpu",
        cores=2,
        calibrated_flops=1e12,
        measurements=(
            Measured("other-model", "lora", 1e6, 1, 8, 512),  # another base model: not used
            Measured("demo", "lora", tokens_per_second, 1_234_567_890, 8, 512),
        ),
    )
    measured = _estimate(measured_worker)
    assert measured.source == "measured"
    assert measured.peak_memory_bytes == 1_234_567_890  # the same batch and length ran on this worker
    train_part = measured.tokens / tokens_per_second
    assert train_part < measured.seconds < train_part * 1.3  # + held-out checks and loading
    assert _estimate(measured_worker, base_model="another").source == "calibrated"


def test_memory_estimate_counts_the_chunked_loss_not_full_logits():
    half_vocab = {**SMOLLM_LIKE, "vocab_size": 49152 // 2}
    big = estimate_job(SMOLLM_LIKE, "lora", PARAMS, task="instruction", n_rows=220, tokens_per_row=80)
    small = estimate_job(half_vocab, "lora", PARAMS, task="instruction", n_rows=220, tokens_per_row=80)
    assert big is not None and small is not None
    weights = 24576 * 576 * 4 * 1.5  # the embedding's weights, and their copy while loading
    one_copy_of_logits = 8 * 92 * 24576 * 4  # a batch of ~92-token rows, half the vocabulary, fp32
    assert big.peak_memory_bytes - small.peak_memory_bytes - weights < one_copy_of_logits / 4


def test_a_finished_job_is_recorded_and_the_preferred_worker_carries_it(client, make_user, tiny_model_dir):
    from tests.app.helpers import SAMPLE_CSV, bearer, upload

    _, _, _, token = make_user("throughput")
    dataset = upload(client, token, SAMPLE_CSV.read_bytes()).json()
    body = {"dataset_id": dataset["id"], "column_mapping": {"prompt": "question", "response": "answer"}, "base_model": "tiny-llama"}
    job_id = client.post("/api/v1/jobs", headers=bearer(token), json={**body, "technique": "lora", "params": {"max_steps": 1}}).json()["id"]
    client.post(f"/api/v1/jobs/{job_id}/cancel", headers=bearer(token))
    name = "calibrated-gpu@tests"
    try:
        with session_scope() as db:
            record_worker_heartbeat(db, name=name, queues="gpu", device=DeviceInfo("cuda:0 Test GPU", 80 * 2**30, calibrated_flops=3e14))
            job = db.get(Job, job_id)
            assert record_job_throughput(db, job, name, tokens=0, train_seconds=1.0, eval_seconds=0.0, peak_memory_bytes=1) is None
            row = record_job_throughput(db, job, name, tokens=5000, train_seconds=12.0, eval_seconds=2.0, peak_memory_bytes=2**30)
            assert row is not None and row.tokens_per_second == 500.0 and row.device == "cuda:0 Test GPU"
        with session_scope() as db:
            worker = preferred_worker(db)
            assert worker is not None and worker.name == name and worker.calibrated_flops == 3e14
            assert worker.measurements == measurements_of(db, name)
            assert worker.measured("tiny-llama", "lora").tokens_per_second == 500.0
        # The API's estimate for the same base model and technique now comes from that measurement.
        page = client.get(f"/api/v1/jobs/{job_id}", headers=bearer(token)).json()
        assert page["id"] == job_id
    finally:
        with session_scope() as db:
            db.execute(delete(ThroughputMeasurement).where(ThroughputMeasurement.worker_name == name))
            db.execute(delete(WorkerNode).where(WorkerNode.name == name))


def test_estimate_source_is_shown_by_the_job_estimate_service(tmp_path: Path):
    from types import SimpleNamespace

    from app.services.job_estimates import estimate_for

    dataset = SimpleNamespace(row_count=220, profile={"columns": [{"name": "q", "mean_chars": 100}, {"name": "a", "mean_chars": 200}]})
    worker = WorkerClass("cpu", measurements=(Measured("demo", "lora", 50.0, 10, 8, 512),))
    got = estimate_for(dataset, SMOLLM_LIKE, "lora", PARAMS, "instruction", {"prompt": "q", "response": "a"}, worker, base_model="demo")  # type: ignore[arg-type]
    assert got["source"] == "measured"
    assert json.dumps(got)  # plain JSON for the form and the job's stored estimate


def test_the_suggested_epochs_follow_the_workers_speed():
    from app.domain.techniques import (
        CATALOGUE,
        QUICK_START_MIN_STEPS,
        QUICK_START_SECONDS,
        SHORT_RUN_BATCH,
        SHORT_RUN_LEARNING_RATE,
        WorkerPace,
        preset_params,
    )

    lora = CATALOGUE["lora"]
    budget = QUICK_START_SECONDS

    def balanced(epoch: float, fixed: float = 0.0, steps: int = 25) -> dict:
        return preset_params(lora, "instruction", 220, "balanced", WorkerPace(epoch, fixed, steps))

    assert preset_params(lora, "instruction", 220, "balanced")["epochs"] == 3  # no worker known: by rows
    assert "max_steps" not in preset_params(lora, "instruction", 220, "balanced")
    assert balanced(budget / 3)["epochs"] == 3
    assert balanced(budget / 2)["epochs"] == 2
    # The fixed part of the wait (loading, the automatic evaluation) comes out of the same budget.
    assert balanced(budget / 4, fixed=budget / 2)["epochs"] == 2
    assert balanced(budget / 2, fixed=budget / 4)["epochs"] == 1
    assert balanced(budget / 2, fixed=budget / 4)["max_steps"] == 0  # a whole epoch fits: no step limit
    assert balanced(budget / 2, fixed=budget / 4)["batch_size"] == 8  # a whole epoch keeps the batch
    # Too slow for one epoch: part of one, in whole steps, never fewer than the floor; the LoRA
    # family takes those rows in half-size batches (twice the updates) at a rate that learns in them.
    slow = balanced(budget * 2, fixed=0.0, steps=40)  # half an epoch fits: 80 steps of 4 rows
    assert slow["epochs"] == 1 and slow["max_steps"] == 40
    assert slow["batch_size"] == SHORT_RUN_BATCH == 4 and slow["learning_rate"] == SHORT_RUN_LEARNING_RATE
    assert balanced(budget * 100, fixed=budget, steps=40)["max_steps"] == QUICK_START_MIN_STEPS
    assert balanced(budget * 2, steps=3)["max_steps"] == 0  # an epoch this short is trained whole
    ia3 = preset_params(CATALOGUE["ia3"], "instruction", 220, "balanced", WorkerPace(budget * 2, 0.0, 40))
    assert ia3["max_steps"] == 20 and ia3["batch_size"] == 8  # other families keep their batch and rate
    assert ia3["learning_rate"] == next(p.default for p in CATALOGUE["ia3"].all_params if p.name == "learning_rate")
    thorough = preset_params(lora, "instruction", 220, "thorough", WorkerPace(budget * 5, 0.0, 25))
    assert thorough["epochs"] == 6 and "max_steps" not in thorough  # thorough is never capped


def test_the_form_suggests_fewer_epochs_for_a_slow_worker(client, make_user, tiny_model_dir):
    from app.config import get_settings
    from app.models import Dataset
    from app.web.train_form import train_form_context
    from tests.app.helpers import SAMPLE_CSV, upload

    _, _, _, token = make_user("slowworker")
    dataset_id = upload(client, token, SAMPLE_CSV.read_bytes()).json()["id"]
    name = "slow-cpu@tests"
    try:
        with session_scope() as db:
            dataset = db.get(Dataset, dataset_id)
            fast = train_form_context(dataset, get_settings())["presets"]["lora"]["instruction"]["balanced"]["epochs"]
            record_worker_heartbeat(db, name=name, queues="gpu", device=DeviceInfo("cpu (2 cores)", 8 * 2**30, calibrated_flops=1e6))
            db.commit()
            slow = train_form_context(dataset, get_settings())["presets"]["lora"]["instruction"]["balanced"]["epochs"]
        assert slow == 1 and fast >= slow
    finally:
        with session_scope() as db:
            db.execute(delete(WorkerNode).where(WorkerNode.name == name))


def test_the_cpu_memory_estimate_follows_the_workers_allocator(client):
    """jemalloc returns freed activations, glibc's malloc keeps them: the first job's peak differs by
    ~0.3 GB on the demo model (README), and the estimate sizes it by what the worker reported."""
    from app.domain.estimates import CPU_ALLOCATOR_OVERHEAD, CPU_ALLOCATOR_OVERHEAD_UNKNOWN

    def peak(allocator):
        return _estimate(WorkerClass("cpu", allocator=allocator), base_model=None).peak_memory_bytes

    assert peak("jemalloc") < peak(None) < peak("system")
    assert CPU_ALLOCATOR_OVERHEAD["jemalloc"] < CPU_ALLOCATOR_OVERHEAD_UNKNOWN < CPU_ALLOCATOR_OVERHEAD["system"]
    gpu = [_estimate(WorkerClass("cuda", memory_bytes=80 * 2**30, allocator=a)).peak_memory_bytes for a in ("jemalloc", "system")]
    assert gpu[0] == gpu[1]  # GPU memory is torch's caching allocator's, whatever the process's malloc
    name = "allocator@tests"
    try:
        with session_scope() as db:  # a GPU worker is preferred over any CPU one: the board's allocator reaches the estimate
            record_worker_heartbeat(db, name=name, queues="gpu", device=DeviceInfo("cuda:0 Test GPU", 80 * 2**30, allocator="jemalloc"))
            db.commit()
            worker = preferred_worker(db)
        assert worker is not None and worker.name == name and worker.allocator == "jemalloc"
    finally:
        with session_scope() as db:
            db.execute(delete(WorkerNode).where(WorkerNode.name == name))
