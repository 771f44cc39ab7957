"""A preference job through the real job runner, continuing from an instruction adapter: the job
records the chosen/rejected log-probabilities as metric points and the reward metrics on the new
adapter; its evaluation also answers with the parent on the same prompts, and the blind review
pairs the two."""

from __future__ import annotations

import io
import random

from sqlalchemy import select

from app.db import session_scope
from app.models import Adapter, Dataset, Job, MetricPoint, User
from app.services import dataset_ingest, jobs, reviews
from app.services.artifacts import get_artifact_store
from app.services.evaluations import load_evaluation
from tests.worker.evaluation.conftest import FACTS, facts_owner, train_adapter  # noqa: F401 (fixtures)
from worker.evaluation.runner import evaluate_adapter
from worker.job_runner import run_training_job


def _pairs_dataset(workspace_id: int, user_id: int) -> int:
    lines = ["prompt,chosen,rejected"] + [f'"{q}",{a},no idea' for q, a in FACTS * 2]
    with session_scope() as db:
        dataset, _ = dataset_ingest.ingest_upload(
            db,
            get_artifact_store(),
            workspace_id=workspace_id,
            user_id=user_id,
            filename="pairs.csv",
            source=io.BytesIO(("\n".join(lines) + "\n").encode()),
            limit_bytes=10**6,
        )
        return dataset.id


def test_a_dpo_job_continues_from_its_parent_and_is_reviewed_against_it(settings, facts_owner, train_adapter):  # noqa: F811
    owner_id, *_, dataset_id = facts_owner
    parent_id = train_adapter(dataset_id, "facts sft", max_steps=6)
    with session_scope() as db:
        workspace_id = db.get(User, owner_id).workspace_id
    pairs_id = _pairs_dataset(workspace_id, owner_id)
    with session_scope() as db:
        job = jobs.submit_job(
            db,
            settings,
            get_artifact_store(),
            workspace_id=workspace_id,
            user_id=owner_id,
            dataset=db.get(Dataset, pairs_id),
            task="preference",
            column_mapping={"prompt": "prompt", "chosen": "chosen", "rejected": "rejected"},
            base_model="tiny-llama",
            technique="lora",
            params={"max_steps": 4, "batch_size": 4, "learning_rate": 3e-3, "validation_fraction": 0.25, "checkpoint_minutes": 0},
            parent_adapter=db.get(Adapter, parent_id),
        )
        job_id = job.id
    assert run_training_job(job_id, "pref-worker") == "succeeded"
    with session_scope() as db:
        child = db.scalars(select(Adapter).where(Adapter.job_id == job_id)).one()
        child_id = child.id
        assert child.metrics["preference_loss"] == "dpo" and 0.0 <= child.metrics["reward_accuracy"] <= 1.0
        assert child.metrics["reward_accuracy_low"] <= child.metrics["reward_accuracy"] <= child.metrics["reward_accuracy_high"]
        assert db.get(Job, job_id).result["preference"]["reward_margin"] is not None
        extras = [p.extra for p in db.scalars(select(MetricPoint).where(MetricPoint.job_id == job_id))]
        assert extras and all("chosen_logps" in e and "rejected_logps" in e for e in extras if e)

    evaluate_adapter(child_id, max_rows=3)
    evaluation = load_evaluation(get_artifact_store(), child_id)
    assert evaluation["parent_adapter_id"] == parent_id and all("parent" in row for row in evaluation["rows"])
    with session_scope() as db:
        seen = set()
        for seed in range(12):
            item = reviews.next_item(
                db, get_artifact_store(), workspace_id=workspace_id, reviewer_id=owner_id, adapter_ids=[child_id], rng=random.Random(seed)
            )
            seen.add(frozenset((item.left_target, item.right_target)))
            reviews.record_vote(db, item, "tie")
        assert frozenset((f"adapter:{child_id}", f"adapter:{parent_id}")) in seen
