"""The first job's wait, phase by phase (issue 15, parts 4 and 5): setup, steps, held-out checks and
the automatic evaluation, from the worker's own speed; the form's first estimate is the preset's;
and the pure helpers of bench/first_job.py that time it end to end."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest
from sqlalchemy import delete

from app.db import session_scope
from app.domain import estimates
from app.domain.estimates import Measured, WorkerClass, estimate_job
from app.models import Adapter, Job, ThroughputMeasurement
from app.services.throughput import measurements_of, record_job_throughput

SMOLLM_LIKE = {
    "model_type": "llama", "hidden_size": 576, "num_hidden_layers": 30, "intermediate_size": 1536,
    "num_attention_heads": 9, "num_key_value_heads": 3, "vocab_size": 49152, "tie_word_embeddings": True,
}  # fmt: skip
PARAMS = {"batch_size": 8, "max_length": 512, "epochs": 1, "r": 16}
WORKER = WorkerClass("cpu", cores=2, calibrated_flops=estimates.REFERENCE_CPU_FLOPS)


def _estimate(task="instruction", n_rows=220, worker=WORKER, **kwargs):
    got = estimate_job(SMOLLM_LIKE, "lora", PARAMS, task=task, n_rows=n_rows, tokens_per_row=70, worker=worker, base_model="demo", **kwargs)
    assert got is not None
    return got


def test_the_phases_add_up_to_the_wait():
    got = _estimate()
    assert got.setup_seconds > 0 and got.train_seconds > 0 and got.held_out_seconds > 0 and got.evaluation_seconds > 0
    assert got.seconds == pytest.approx(got.setup_seconds + got.train_seconds + got.held_out_seconds)
    assert got.total_seconds == pytest.approx(got.seconds + got.evaluation_seconds)
    off = _estimate(evaluate=False)  # TAILOR_AUTO_EVALUATE off: nothing after the job
    assert off.evaluation_seconds == 0 and off.total_seconds == pytest.approx(off.seconds) == pytest.approx(got.seconds)


def test_a_slower_worker_waits_longer_in_every_phase():
    fast, slow = _estimate(), _estimate(worker=WorkerClass("cpu", cores=2, calibrated_flops=estimates.REFERENCE_CPU_FLOPS / 4))
    for phase in ("setup_seconds", "train_seconds", "held_out_seconds", "evaluation_seconds"):
        assert getattr(slow, phase) == pytest.approx(4 * getattr(fast, phase), rel=1e-6), phase


def test_the_evaluation_generates_for_at_most_its_rows_and_classification_generates_nothing():
    per_row = _estimate(n_rows=220).evaluation_seconds  # 22 held-out rows
    capped = _estimate(n_rows=2000).evaluation_seconds  # 200 held-out rows, answers for 40
    huge = _estimate(n_rows=4000).evaluation_seconds  # 400 held-out rows: the loss rows are capped too
    assert per_row < capped < huge < _estimate(n_rows=8000).evaluation_seconds * 1.0001
    assert _estimate(n_rows=8000).evaluation_seconds == pytest.approx(huge)
    assert _estimate(task="classification").evaluation_seconds < per_row / 5  # one forward pass per row


def test_the_estimate_knows_what_the_evaluation_does():
    from app.domain import evaluation_costs
    from worker.evaluation import runner

    assert runner.MAX_EVAL_ROWS == evaluation_costs.EVAL_GENERATION_ROWS
    assert runner.MAX_NEW_TOKENS == evaluation_costs.EVAL_NEW_TOKENS
    assert runner.MAX_CONTINUATION_TOKENS == evaluation_costs.EVAL_CONTINUATION_TOKENS
    assert runner.MAX_LOSS_ROWS == evaluation_costs.EVAL_LOSS_ROWS


def test_measured_setup_and_evaluation_win_over_the_model():
    worker = WorkerClass(
        "cpu",
        calibrated_flops=1e10,
        measurements=(Measured("demo", "lora", 50.0, 10, 8, 512, setup_seconds=33.0, evaluation_seconds=110.0, evaluation_rows=22),),
    )
    got = _estimate(worker=worker, n_rows=110)  # 11 held-out rows: half the rows the measured evaluation answered
    assert got.source == "measured" and got.setup_seconds == 33.0
    fixed = estimates.evaluation_fixed_seconds(got.total_parameters, worker, 50.0 * 4 * got.total_parameters)
    assert 0 < fixed < 55.0
    assert got.evaluation_seconds == pytest.approx(fixed + (110.0 - fixed) / 2)  # the per-row part halves, loading does not
    assert got.train_seconds == pytest.approx(got.tokens / 50.0)


def test_a_finished_job_gives_its_setup_and_evaluation_times(client, make_user, tiny_model_dir):
    from datetime import timedelta

    from tests.app.helpers import SAMPLE_CSV, bearer, upload

    _, _, _, token = make_user("setup-times")
    dataset = upload(client, token, SAMPLE_CSV.read_bytes()).json()
    body = {"dataset_id": dataset["id"], "column_mapping": {"prompt": "question", "response": "answer"}, "base_model": "tiny-llama"}
    job_id = client.post("/api/v1/jobs", headers=bearer(token), json={**body, "technique": "lora", "params": {"max_steps": 1}}).json()["id"]
    client.post(f"/api/v1/jobs/{job_id}/cancel", headers=bearer(token))
    name = "setup-times@tests"
    try:
        with session_scope() as db:
            job = db.get(Job, job_id)
            job.finished_at = job.created_at + timedelta(seconds=100)
            job.started_at = job.created_at
            job.result = {"train_seconds": 60.0}  # steps and held-out checks, by the worker's count
            db.add(Adapter(workspace_id=job.workspace_id, job_id=job_id, name="a", base_model="tiny-llama", technique="lora",
                           storage_key="k", metrics={"evaluation": {"seconds": 42.5, "rows": 17}}))  # fmt: skip
            record_job_throughput(db, job, name, tokens=5000, train_seconds=55.0, eval_seconds=5.0, peak_memory_bytes=2**30)
        with session_scope() as db:
            (measured,) = measurements_of(db, name)
        assert measured.setup_seconds == pytest.approx(40.0)  # 100 s claim -> succeeded, less 60 s of training
        assert measured.evaluation_seconds == 42.5 and measured.evaluation_rows == 17
    finally:
        with session_scope() as db:
            db.execute(delete(ThroughputMeasurement).where(ThroughputMeasurement.worker_name == name))
            db.execute(delete(Adapter).where(Adapter.job_id == job_id))


def test_the_first_estimate_on_the_form_is_for_the_preselected_preset(client, make_user, tiny_model_dir):
    from app.config import get_settings
    from app.models import Dataset, WorkerNode
    from app.services.workers import DeviceInfo, record_worker_heartbeat
    from app.web.train_form import train_form_context
    from tests.app.helpers import SAMPLE_CSV, upload

    _, _, _, token = make_user("first-estimate")
    dataset_id = upload(client, token, SAMPLE_CSV.read_bytes()).json()["id"]
    name = "first-estimate@tests"
    try:
        with session_scope() as db:
            # far too slow for an epoch of the sample data within the budget, whichever base model is the default
            record_worker_heartbeat(db, name=name, queues="gpu", device=DeviceInfo("cpu (2 cores)", 8 * 2**30, calibrated_flops=1e3))
            db.commit()
            ctx = train_form_context(db.get(Dataset, dataset_id), get_settings())
        preset = ctx["presets"]["lora"][ctx["form"]["task"]][ctx["form"]["preset"]]
        assert preset["max_steps"] > 0  # this slow a worker gets part of an epoch
        assert ctx["estimate"]["steps"] == preset["max_steps"]  # the estimate shown is for those values
        shown = ctx["estimate"]
        assert shown["total_seconds"] == pytest.approx(shown["seconds"] + shown["evaluation_seconds"])
        assert (shown["evaluation_seconds"] > 0) == get_settings().auto_evaluate  # the wait includes the evaluation when there is one
    finally:
        with session_scope() as db:
            db.execute(delete(WorkerNode).where(WorkerNode.name == name))


def test_a_preset_sent_through_the_api_is_sized_to_the_worker_like_the_forms(client, make_user, tiny_model_dir):
    from app.models import WorkerNode
    from app.services.workers import DeviceInfo, record_worker_heartbeat
    from tests.app.helpers import SAMPLE_CSV, bearer, upload

    _, _, _, token = make_user("api-preset")
    dataset_id = upload(client, token, SAMPLE_CSV.read_bytes()).json()["id"]
    body = {
        "dataset_id": dataset_id,
        "column_mapping": {"prompt": "question", "response": "answer"},
        "base_model": "tiny-llama",
        "technique": "lora",
        "preset": "balanced",
    }
    name = "api-preset@tests"
    try:
        with session_scope() as db:
            record_worker_heartbeat(db, name=name, queues="gpu", device=DeviceInfo("cpu (2 cores)", 8 * 2**30, calibrated_flops=1e3))
            db.commit()
        job = client.post("/api/v1/jobs", headers=bearer(token), json=body).json()
        assert client.post(f"/api/v1/jobs/{job['id']}/cancel", headers=bearer(token)).status_code == 200
        with session_scope() as db:
            params = db.get(Job, job["id"]).params
        assert params["max_steps"] >= 12 and params["batch_size"] == 4  # part of an epoch on this slow a worker
        # a caller's own value still wins over the preset's
        mine = client.post("/api/v1/jobs", headers=bearer(token), json={**body, "params": {"max_steps": 3}}).json()
        assert client.post(f"/api/v1/jobs/{mine['id']}/cancel", headers=bearer(token)).status_code == 200
        with session_scope() as db:
            assert db.get(Job, mine["id"]).params["max_steps"] == 3
    finally:
        with session_scope() as db:
            db.execute(delete(WorkerNode).where(WorkerNode.name == name))


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (45, "about 45 s"),
        (229, "about 3 min 50 s"),
        (238, "about 4 min"),
        (301, "about 5 min"),
        (1500, "about 25 min"),
        (7200, "about 2.0 h"),
    ],
)
def test_the_form_shows_the_wait_to_ten_seconds_under_ten_minutes(seconds, shown):
    from app.web.templating import templates

    estimate = {"seconds": seconds, "total_seconds": seconds, "setup_seconds": 1, "train_seconds": 1, "held_out_seconds": 0,
                "evaluation_seconds": 0, "steps": 1, "peak_memory_bytes": 2**30, "trainable_parameters": 1, "total_parameters": 2,
                "adapter_bytes": 10, "worker": "cpu", "worker_cores": 2}  # fmt: skip
    html = templates.env.get_template("_train_estimate.html").render(estimate=estimate)
    assert f'<dd id="estimate-time">{shown}' in html


def test_the_worker_waits_passively_unless_told_otherwise():
    from app.worker_environment import set_worker_environment

    env: dict[str, str] = {}
    set_worker_environment(env)
    assert env == {"OMP_WAIT_POLICY": "PASSIVE"}
    mine = {"OMP_WAIT_POLICY": "ACTIVE"}
    set_worker_environment(mine)
    assert mine == {"OMP_WAIT_POLICY": "ACTIVE"}


def test_the_serving_engine_waits_passively_too(monkeypatch):
    """`tailor engine` decodes beside the training workers: it sets the same OpenMP policy before torch loads."""
    import argparse

    import worker.serving.main
    from app.cli import cmd_engine
    from app.config import get_settings

    monkeypatch.setattr(get_settings(), "worker_allocator", "system")  # no restart of this test process with jemalloc
    monkeypatch.setenv("OMP_WAIT_POLICY", "restored after the test")
    monkeypatch.delenv("OMP_WAIT_POLICY")
    seen = {}

    def serve(key, name):
        seen["policy"] = os.environ.get("OMP_WAIT_POLICY")
        return 0

    monkeypatch.setattr(worker.serving.main, "serve", serve)
    assert cmd_engine(argparse.Namespace(base_model=None, name=None)) == 0
    assert seen == {"policy": "PASSIVE"}


# ---------------------------------------------------------------- bench/first_job.py's pure helpers


def _bench():
    path = Path(__file__).resolve().parents[2] / "bench" / "first_job.py"
    spec = importlib.util.spec_from_file_location("first_job_bench", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


FORM = """
<form id="other"><input name="nope" value="x"></form>
<form method="post" action="/jobs" id="train-form">
  <input type="hidden" name="csrf_token" value="t">
  <script type="application/json" id="train-presets">{"lora": {"instruction": {"balanced": {"epochs": 1, "r": 16}}}}</script>
  <select name="task" id="task"><option value="instruction" selected>Instruction</option><option value="text">Text</option></select>
  <fieldset data-task="instruction"><select name="prompt_column"><option value="question" selected>q</option></select></fieldset>
  <fieldset data-task="text" disabled hidden><select name="text_column"><option value="question">q</option></select></fieldset>
  <select name="technique" id="technique"><option value="full" disabled>Full</option><option value="lora">LoRA</option></select>
  <select name="preset" id="preset"><option value="">keep</option><option value="balanced" selected>Balanced</option></select>
  <fieldset class="params" data-technique="lora"><input name="param_epochs" value="2" type="number">
    <input name="param_lr" value="0.1"></fieldset>
  <fieldset class="params" data-technique="dora" disabled hidden><input name="param_epochs" value="9"></fieldset>
  <input type="checkbox" name="bakeoff_techniques" value="dora">
  <input type="checkbox" name="checked_box" value="yes" checked>
  <select name="many" multiple><option value="a" selected>a</option><option value="b" selected>b</option></select>
  <textarea name="notes">hello</textarea>
  <button type="submit">Start training</button>
</form>
"""


def test_the_bench_posts_the_form_as_a_browser_with_the_preset_applied():
    bench = _bench()
    fields = bench.form_fields(FORM, "train-form")
    assert fields == [
        ("csrf_token", "t"), ("task", "instruction"), ("prompt_column", "question"), ("technique", "lora"), ("preset", "balanced"),
        ("param_epochs", "2"), ("param_lr", "0.1"), ("checked_box", "yes"), ("many", "a"), ("many", "b"), ("notes", "hello"),
    ]  # fmt: skip
    applied, values = bench.apply_preset(fields, bench.json_script(FORM, "train-presets"))
    assert values == {"epochs": 1, "r": 16}
    assert ("param_epochs", "1") in applied and ("param_lr", "0.1") in applied
    assert bench.as_form(applied)["many"] == ["a", "b"]


def test_the_bench_reads_the_estimate_and_judges_the_intervals():
    bench = _bench()
    page = '<dd id="estimate-time">about 4 min <span class="muted small">to a scored adapter</span></dd>'
    assert bench.shown_seconds(bench.text_of(page, "estimate-time")) == 240.0
    assert bench.shown_seconds("about 75 s") == 75.0 and bench.shown_seconds("about 1.5 h") == 5400.0
    assert bench.shown_seconds("about 3 min 50 s to a scored adapter") == 230.0
    assert importlib.import_module("bench.first_job_pages").shown_gigabytes("3.4 GB") == 3.4
    assert bench.percent_error(120.0, 100.0) == pytest.approx(20.0) and bench.percent_error(None, 1.0) is None
    summary = {
        "adapter": {
            "perplexity": {"value": 5.0, "low": 4.0, "high": 6.0},
            "rouge_l": {"value": 0.4, "low": 0.3, "high": 0.5},
            "token_f1": {"value": 0.4, "low": 0.2, "high": 0.5},
        },
        "base": {
            "perplexity": {"value": 9.0, "low": 7.0, "high": 11.0},
            "rouge_l": {"value": 0.1, "low": 0.05, "high": 0.2},
            "token_f1": {"value": 0.3, "low": 0.1, "high": 0.35},
        },
    }
    assert bench.better_apart(summary) == ["perplexity", "rouge_l"]  # token_f1's intervals overlap


def test_the_bench_splits_the_wait_into_phases_that_add_up():
    bench = _bench()
    t = bench.Timeline(
        job_started=2.0, first_step=22.0, last_step=122.0, job_finished=130.0, evaluation_started=131.0, evaluation_done=200.0,
        downloaded=201.0, train_seconds=110.0, steps=11,
    )  # fmt: skip
    phases = dict(t.phases())
    assert phases["model load + tokenize (claim -> first step starts)"] == pytest.approx(10.0)  # less the first step's 10 s
    assert phases["training steps + held-out checks"] == pytest.approx(110.0)
    whole = [s for label, s in t.phases() if not label.startswith("  ")]
    assert sum(whole) == pytest.approx(t.downloaded)
