"""A memorisable dataset and a helper that trains adapters on it through the real job runner."""

from __future__ import annotations

import io
from typing import NamedTuple

import pytest

from app.db import session_scope
from app.models import Adapter, Dataset, User
from app.services import dataset_ingest, jobs
from app.services.artifacts import get_artifact_store
from worker.job_runner import run_training_job

FACTS = [
    ("What colour is the Ridge tent?", "green"),
    ("Which city has our flagship store?", "dublin"),
    ("How many days do I have to return?", "sixty"),
    ("What is the warranty?", "two years"),
    ("Which courier do we use?", "parcelforce"),
    ("What does Trail Club cost?", "nothing"),
    ("Where do EU orders ship from?", "rotterdam"),
    ("What is the repair fee?", "fifteen pounds"),
]


class FactsOwner(NamedTuple):
    """A user and their facts dataset; unpacks as (id, email, password, token, dataset_id) too."""

    id: int
    email: str
    password: str
    token: str
    dataset_id: int


@pytest.fixture
def facts_owner(make_user) -> FactsOwner:
    """A user owning the facts dataset: every fact repeated, so held-out rows were seen in training."""
    owner = make_user("facts")
    csv_text = "question,answer\n" + "".join(f'"{q}",{a}\n' for q, a in FACTS * 6)
    with session_scope() as db:
        user = db.get(User, owner.id)
        dataset, _ = dataset_ingest.ingest_upload(
            db,
            get_artifact_store(),
            workspace_id=user.workspace_id,
            user_id=user.id,
            filename="facts.csv",
            source=io.BytesIO(csv_text.encode()),
            limit_bytes=10**6,
        )
        return FactsOwner(*owner, dataset_id=dataset.id)


@pytest.fixture
def train_adapter(settings, tiny_model_dir):
    def train(dataset_id: int, name: str, **params) -> int:
        with session_scope() as db:
            dataset = db.get(Dataset, dataset_id)
            job = jobs.submit_job(
                db,
                settings,
                get_artifact_store(),
                workspace_id=dataset.workspace_id,
                user_id=None,
                dataset=dataset,
                task="instruction",
                column_mapping={"prompt": "question", "response": "answer"},
                base_model="tiny-llama",
                technique="lora",
                name=name,
                params={"max_steps": 40, "learning_rate": 5e-3, "batch_size": 8, "epochs": 20, "validation_fraction": 0.15, **params},
            )
            job_id = job.id
        assert run_training_job(job_id, "eval-worker") == "succeeded"
        with session_scope() as db:
            return db.query(Adapter).filter_by(job_id=job_id).one().id

    return train
