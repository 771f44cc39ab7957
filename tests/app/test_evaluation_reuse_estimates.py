"""The evaluation's estimate knows when the base model's side is already cached (issue 15, part 4):
a second adapter of the same data, split and base model (a comparison of techniques, a retry)
waits only for its own answers and losses; the worker times the base side so that a measured
evaluation can be split into the two."""

from __future__ import annotations

import pytest
from sqlalchemy import delete

from app.db import session_scope
from app.domain import estimates
from app.domain.estimates import WorkerClass, estimate_job
from app.domain.evaluation_costs import answered_rows, measured_evaluation_seconds, modelled_evaluation_seconds
from app.domain.task_kinds import get_task_kind
from app.models import Adapter, Dataset, Job
from app.services.job_estimates import base_side_cached, estimate_for
from tests.app.helpers import SAMPLE_CSV, bearer, upload
from tests.conftest import sign_in

SMOLLM_LIKE = {
    "model_type": "llama", "hidden_size": 576, "num_hidden_layers": 30, "intermediate_size": 1536,
    "num_attention_heads": 9, "num_key_value_heads": 3, "vocab_size": 49152, "tie_word_embeddings": True,
}  # fmt: skip
WORKER = WorkerClass("cpu", cores=2, calibrated_flops=estimates.REFERENCE_CPU_FLOPS)


def test_a_cached_base_side_leaves_the_adapters_own_side_and_the_fixed_part():
    kind = get_task_kind("instruction")
    both = modelled_evaluation_seconds(135_000_000, kind, 22, 70.0, "cpu", 3e10, 13.0)
    adapter_only = modelled_evaluation_seconds(135_000_000, kind, 22, 70.0, "cpu", 3e10, 13.0, base_cached=True)
    assert adapter_only - 13.0 == pytest.approx((both - 13.0) / 2)  # the two sides cost the same per row
    classification = get_task_kind("classification")  # a majority-class baseline: no base model side at all
    assert modelled_evaluation_seconds(135_000_000, classification, 22, 70.0, "cpu", 3e10, 13.0) == modelled_evaluation_seconds(
        135_000_000, classification, 22, 70.0, "cpu", 3e10, 13.0, base_cached=True
    )


@pytest.mark.parametrize(
    ("base_seconds", "cached_now", "expected"),
    [
        (None, False, 10 + 90 * 0.5),  # recorded before the base side was timed: the whole time scales
        (None, True, 10 + 90 * 0.5),  # ... and it cannot be split, so it is not
        (40.0, False, 10 + 90 * 0.5),  # both sides ran then and run now
        (40.0, True, 10 + 50 * 0.5),  # only the adapter's side runs now
        (0.0, True, 10 + 90 * 0.5),  # cached then (its whole time was the adapter's side) and now
        (0.0, False, 10 + 2 * 90 * 0.5),  # cached then, not now: the base side costs what the adapter's did
    ],
)
def test_a_measured_evaluation_splits_into_its_two_sides(base_seconds, cached_now, expected):
    # 100 s for 16 answered rows with 10 s fixed; this job answers 8 rows
    got = measured_evaluation_seconds(100.0, 16, base_seconds, 8, 10.0, base_cached=cached_now)
    assert got == pytest.approx(expected)


def test_a_task_without_a_base_side_never_doubles_its_measured_evaluation():
    # classification: the baseline is the majority class, so the worker records base_seconds 0
    assert measured_evaluation_seconds(100.0, 16, 0.0, 16, 10.0, base_side=False) == pytest.approx(100.0)
    assert measured_evaluation_seconds(100.0, 16, 0.0, 8, 10.0, base_side=False) == pytest.approx(10 + 90 * 0.5)


def test_a_classifiers_measured_evaluation_scales_with_every_held_out_row():
    from app.domain.estimates import Measured

    measured = Measured("demo", "lora", 50.0, 10, 8, 512, evaluation_seconds=30.0, evaluation_rows=22, evaluation_base_seconds=0.0)
    worker = WorkerClass("cpu", calibrated_flops=estimates.REFERENCE_CPU_FLOPS, measurements=(measured,))
    params = {"batch_size": 8, "max_length": 512, "epochs": 1}
    kwargs = dict(task="classification", tokens_per_row=70, worker=worker, base_model="demo")
    same = estimate_job(SMOLLM_LIKE, "lora", params, n_rows=220, **kwargs)
    assert same is not None and same.evaluation_seconds == pytest.approx(30.0)  # 22 rows then, 22 now: its own time, not doubled
    twice = estimate_job(SMOLLM_LIKE, "lora", params, n_rows=440, **kwargs)
    fixed = estimates.evaluation_fixed_seconds(same.total_parameters, worker, 50.0 * 4 * same.total_parameters)
    assert twice is not None and twice.evaluation_seconds == pytest.approx(fixed + 2 * (30.0 - fixed))  # 44 rows: twice the per-row part


def test_the_estimate_passes_the_cache_to_the_evaluation_only():
    params = {"batch_size": 8, "max_length": 512, "epochs": 1}
    first, second = (
        estimate_job(SMOLLM_LIKE, "lora", params, task="instruction", n_rows=220, tokens_per_row=70, worker=WORKER, base_cached=cached)
        for cached in (False, True)
    )
    assert first is not None and second is not None
    assert second.evaluation_seconds < 0.6 * first.evaluation_seconds
    assert (second.seconds, second.peak_memory_bytes) == (first.seconds, first.peak_memory_bytes)


def _evaluated_job(client, token, dataset_id, evaluation_rows, **overrides) -> int:
    body = {
        "dataset_id": dataset_id,
        "column_mapping": {"prompt": "question", "response": "answer"},
        "base_model": "tiny-llama",
        "technique": "lora",
        "params": {"max_steps": 1},
        **overrides,
    }
    response = client.post("/api/v1/jobs", headers=bearer(token), json=body)
    assert response.status_code == 201, response.text
    job_id = response.json()["id"]
    client.post(f"/api/v1/jobs/{job_id}/cancel", headers=bearer(token))
    with session_scope() as db:
        job = db.get(Job, job_id)
        evaluation = {"seconds": 50.0, "rows": evaluation_rows, "base_seconds": 20.0}
        db.add(Adapter(workspace_id=job.workspace_id, job_id=job_id, name=f"a{job_id}", base_model="tiny-llama", technique="lora",
                       storage_key=f"k{job_id}", metrics={"evaluation": evaluation}))  # fmt: skip
    return job_id


def test_an_earlier_evaluation_of_the_same_held_out_rows_is_found(client, make_user, tiny_model_dir, monkeypatch):
    from app.config import get_settings

    monkeypatch.setattr(get_settings(), "auto_evaluate", True)  # the tests' server leaves it off
    _, email, password, token = make_user("base-cache")
    dataset_id = upload(client, token, SAMPLE_CSV.read_bytes()).json()["id"]
    mapping = {"prompt": "question", "response": "answer"}
    with session_scope() as db:
        dataset = db.get(Dataset, dataset_id)
        rows = answered_rows(estimates.held_out_rows(int(dataset.row_count), 0.1), "cpu")
        cached = dict(fraction=0.1, seed=0, validation_dataset_id=None, answered=rows)
        assert not base_side_cached(db, dataset_id, "tiny-llama", "instruction", mapping, **cached)  # nothing evaluated yet
    job_ids = [_evaluated_job(client, token, dataset_id, rows, seed=7)]  # another split
    job_ids.append(_evaluated_job(client, token, dataset_id, rows + 1))  # another number of answered rows
    try:
        with session_scope() as db:
            assert not base_side_cached(db, dataset_id, "tiny-llama", "instruction", mapping, **cached)
            assert base_side_cached(db, dataset_id, "tiny-llama", "instruction", mapping, **{**cached, "seed": 7})
        job_ids.append(_evaluated_job(client, token, dataset_id, rows, technique="ia3", params={"max_steps": 1}))
        with session_scope() as db:  # another technique of the same data: the base side is the same
            assert base_side_cached(db, dataset_id, "tiny-llama", "instruction", mapping, **cached)
            assert base_side_cached(db, dataset_id, "tiny-llama", "instruction", {**mapping, "system": ""}, **cached)  # an empty role
            assert not base_side_cached(db, dataset_id, "tiny-llama", "instruction", {"prompt": "answer", "response": "question"}, **cached)
            assert not base_side_cached(db, dataset_id, "tiny-llama", "instruction", mapping, **{**cached, "fraction": 0.2})
            assert not base_side_cached(db, dataset_id, "tiny-llama", "text", mapping, **cached)
            assert not base_side_cached(db, dataset_id, "other-model", "instruction", mapping, **cached)
            dataset = db.get(Dataset, dataset_id)
            params = {"batch_size": 8}
            shown, fresh = (
                estimate_for(dataset, SMOLLM_LIKE, "lora", params, "instruction", mapping, WORKER, base_model="tiny-llama", seed=seed)
                for seed in (0, 3)
            )
        assert shown["base_answers_cached"] and not fresh["base_answers_cached"]
        assert shown["evaluation_seconds"] < fresh["evaluation_seconds"]

        # The training form says so next to its shorter evaluation.
        csrf = sign_in(client, email, password)
        form = {"csrf_token": csrf, "dataset_id": dataset_id, "task": "instruction", "prompt_column": "question",
                "response_column": "answer", "base_model": "tiny-llama", "technique": "lora"}  # fmt: skip
        reused = client.post("/jobs/estimate", data=form, headers={"HX-Request": "true"}).text
        assert "reused from an earlier job" in reused
        other_split = client.post("/jobs/estimate", data={**form, "seed": "3"}, headers={"HX-Request": "true"})
        assert other_split.status_code == 200 and "reused from an earlier job" not in other_split.text
        odd_seed = client.post("/jobs/estimate", data={**form, "seed": "x"}, headers={"HX-Request": "true"})
        assert odd_seed.status_code == 200 and 'id="train-estimate"' in odd_seed.text  # the job's form names that error
    finally:
        with session_scope() as db:
            db.execute(delete(Adapter).where(Adapter.job_id.in_(job_ids)))
