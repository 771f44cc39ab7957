"""An adapter trained on a memorisable set, evaluated next to its base model on real generations."""

from __future__ import annotations

import json
import zipfile

from app.db import session_scope
from app.models import Adapter, Job
from app.services.adapters import adapter_zip_path
from app.services.artifacts import get_artifact_store
from app.services.evaluations import load_evaluation
from worker.evaluation.runner import evaluate_adapter


def test_evaluation_scores_adapter_and_base_with_intervals(facts_owner, train_adapter, monkeypatch):
    from app.domain import evaluation_costs

    # Each answered row costs seconds of greedy decoding on a CPU (bench/first_job.py): a CPU worker
    # answers at most EVAL_GENERATION_ROWS_CPU held-out prompts (5 here, fewer than the facts' held-out
    # rows) and scores the loss on every held-out row.
    monkeypatch.setattr(evaluation_costs, "EVAL_GENERATION_ROWS_CPU", 5)
    *_, dataset_id = facts_owner
    adapter_id = train_adapter(dataset_id, "facts LoRA", max_steps=60, r=16, alpha=32)
    get_artifact_store().delete("evaluations/base-losses")  # a cache: start from none (checked at the end)

    summary = evaluate_adapter(adapter_id)

    assert summary["rows"] == 5  # the tests run on a CPU
    assert 0 < summary["base_seconds"] < summary["seconds"]  # the base model's side, timed for later estimates
    with session_scope() as db:
        held_out = db.get(Job, db.get(Adapter, adapter_id).job_id).result["validation"]["rows"]
    assert summary["loss_examples"] == held_out > 5
    adapter_em, base_em = summary["adapter"]["exact_match"], summary["base"]["exact_match"]
    assert adapter_em["value"] > base_em["value"]
    assert adapter_em["low"] <= adapter_em["value"] <= adapter_em["high"]
    assert {"exact_match", "token_f1", "rouge_l", "semantic_similarity"} <= set(summary["adapter"])
    stored = load_evaluation(get_artifact_store(), adapter_id)
    assert len(stored["rows"]) == summary["rows"]
    assert any(row["adapter"] != row["base"] for row in stored["rows"])
    with session_scope() as db:
        adapter = db.get(Adapter, adapter_id)
        assert adapter.metrics["evaluation"]["rows"] == summary["rows"]
        with zipfile.ZipFile(adapter_zip_path(get_artifact_store(), adapter)) as archive:
            card = archive.read("README.md").decode()
            assert set(archive.namelist()) == {"adapter_config.json", "adapter_model.safetensors", "README.md"}
    # The shipped model card now carries the metrics with intervals, and a vLLM snippet for LoRA.
    assert f"Evaluation on {summary['rows']} held-out rows" in card and "| ROUGE-L |" in card
    assert card.count("Evaluation on") == 1 and "vllm serve" in card and "LoRARequest" in card

    # The base model's held-out losses are computed once per base model and rows, like its
    # answers: a second evaluation reads them back (here a planted value proves it).
    cached = list(get_artifact_store().path("evaluations/base-losses").glob("tiny-llama-*.json"))
    assert len(cached) == 1
    losses = json.loads(cached[0].read_text())["losses"]
    cached[0].write_text(json.dumps({"base_model": "tiny-llama", "losses": [[10.0 * n, n] for _, n in losses]}))
    again = evaluate_adapter(adapter_id)
    assert again["base"]["validation_loss"]["value"] == 10.0
    assert again["base_seconds"] == 0.0  # answers and losses both from the cache: the base side cost nothing
    assert again["adapter"]["validation_loss"] == summary["adapter"]["validation_loss"]
