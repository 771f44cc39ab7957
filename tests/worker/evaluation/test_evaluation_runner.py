"""An adapter trained on a memorisable set, evaluated next to its base model on real generations."""

from __future__ import annotations

import io

from app.db import session_scope
from app.models import Adapter, Dataset, User
from app.services import datasets, jobs
from app.services.artifacts import get_artifact_store
from app.services.evaluations import load_evaluation
from worker.evaluation.runner import evaluate_adapter
from worker.job_runner import run_training_job

FACTS = [("What colour is the Ridge tent?", "green"), ("Which city has our flagship store?", "dublin"),
         ("How many days do I have to return?", "sixty"), ("What is the warranty?", "two years"),
         ("Which courier do we use?", "parcelforce"), ("What does Trail Club cost?", "nothing"),
         ("Where do EU orders ship from?", "rotterdam"), ("What is the repair fee?", "fifteen pounds")]


def test_evaluation_scores_adapter_and_base_with_intervals(make_user, settings, tiny_model_dir):
    # Every fact appears many times, so the held-out rows were also seen in training:
    # the adapter memorises them and must beat the untouched base model.
    csv_text = "question,answer\n" + "".join(f'"{q}",{a}\n' for q, a in FACTS * 6)
    user_id, *_ = make_user("eval")
    with session_scope() as db:
        user = db.get(User, user_id)
        dataset, _ = datasets.ingest_upload(db, get_artifact_store(), workspace_id=user.workspace_id, user_id=user.id,
                                            filename="facts.csv", source=io.BytesIO(csv_text.encode()), limit_bytes=10**6)
        job = jobs.submit_job(db, settings, get_artifact_store(), workspace_id=user.workspace_id, user_id=None,
                              dataset=db.get(Dataset, dataset.id), task="instruction",
                              column_mapping={"prompt": "question", "response": "answer"}, base_model="tiny-llama", technique="lora",
                              params={"max_steps": 60, "learning_rate": 5e-3, "batch_size": 8, "epochs": 20, "r": 16, "alpha": 32,
                                      "validation_fraction": 0.15})
        job_id = job.id
    assert run_training_job(job_id, "eval-worker") == "succeeded"
    with session_scope() as db:
        adapter_id = db.query(Adapter).filter_by(job_id=job_id).one().id

    summary = evaluate_adapter(adapter_id)

    assert summary["rows"] >= 5
    adapter_em, base_em = summary["adapter"]["exact_match"], summary["base"]["exact_match"]
    assert adapter_em["value"] > base_em["value"]
    assert adapter_em["low"] <= adapter_em["value"] <= adapter_em["high"]
    assert {"exact_match", "token_f1", "rouge_l", "semantic_similarity"} <= set(summary["adapter"])
    stored = load_evaluation(get_artifact_store(), adapter_id)
    assert len(stored["rows"]) == summary["rows"]
    assert any(row["adapter"] != row["base"] for row in stored["rows"])
    with session_scope() as db:
        assert db.get(Adapter, adapter_id).metrics["evaluation"]["rows"] == summary["rows"]
