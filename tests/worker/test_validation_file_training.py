"""A job with a separately uploaded validation file trains on every row of its dataset and is
measured on exactly the file's rows (the masked training copy when masking is on)."""

from __future__ import annotations

import csv
import io
import zipfile

from app.db import session_scope
from app.models import Adapter, Dataset, Job, User
from app.services import dataset_ingest, dataset_masking, dataset_store, jobs, task_rows
from app.services.adapters import adapter_zip_path
from app.services.artifacts import get_artifact_store
from app.services.evaluations import load_evaluation
from tests.app.helpers import SAMPLE_CSV
from worker.evaluation.runner import evaluate_adapter
from worker.job_runner import build_spec, run_training_job
from worker.training.provenance import data_fingerprint

MAPPING = {"prompt": "question", "response": "answer"}
HELD_OUT = [
    ("Can I pay with a gift card and a credit card together?", "Yes: enter the gift card first, then pay the rest by card."),
    ("Do you repair zips on jackets?", "We do, free for the first two years; send it in with the repair form."),
    ("Is the Alpine tent waterproof?", "Yes, its flysheet holds a 3,000 mm water column."),
    ("Where do I send a warranty claim? Write to me at jo.smith@example.com", "Reply to your order email with photos of the fault."),
    ("How long does a refund take?", "Five working days after the parcel reaches us."),
]


def _ingest(db, workspace_id: int, name: str, content: bytes) -> Dataset:
    dataset, _ = dataset_ingest.ingest_upload(
        db, get_artifact_store(), workspace_id=workspace_id, user_id=None, filename=name, source=io.BytesIO(content), limit_bytes=10**8
    )
    return dataset


def _csv(rows) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["question", "answer"])
    writer.writerows(rows)
    return out.getvalue().encode()


def test_training_validates_on_exactly_the_file_rows(make_user, settings, tiny_model_dir):
    user_id, *_ = make_user("valtrain")
    store = get_artifact_store()
    with session_scope() as db:
        workspace_id = db.get(User, user_id).workspace_id
        train = _ingest(db, workspace_id, "northwind.csv", SAMPLE_CSV.read_bytes())
        held_out = _ingest(db, workspace_id, "holdout.csv", _csv(HELD_OUT))
        dataset_masking.set_pii_masking(db, store, held_out, on=True)  # its masked copy is what validation reads
        job = jobs.submit_job(
            db,
            settings,
            store,
            workspace_id=workspace_id,
            user_id=None,
            dataset=train,
            task="instruction",
            column_mapping=MAPPING,
            base_model="tiny-llama",
            technique="lora",
            params={"max_steps": 4, "learning_rate": 3e-3, "batch_size": 4},
            validation_dataset=held_out,
        )
        job_id, train_rows = job.id, task_rows.task_rows(store, train, "instruction", MAPPING)
        spec = build_spec(db.get(Job, job_id), train, store.temp_path())
    # The engine gets every row of the dataset to learn from and the file's rows to measure on.
    assert spec.train_rows == train_rows and len(train_rows) == 220
    assert [row[:2] for row in spec.validation_rows][:3] == HELD_OUT[:3] and len(spec.validation_rows) == len(HELD_OUT)
    assert "[EMAIL]" in spec.validation_rows[3][0] and "jo.smith@example.com" not in spec.validation_rows[3][0]

    assert run_training_job(job_id, "worker-valfile") == "succeeded"
    with session_scope() as db:
        job = db.get(Job, job_id)
        result = job.result
        adapter = db.query(Adapter).filter(Adapter.job_id == job_id).one()
        zip_path, adapter_id = adapter_zip_path(store, adapter), adapter.id
    assert result["validation"]["source"] == "file" and result["validation"]["rows"] == len(HELD_OUT)
    assert result["validation"]["train_rows"] == 220 and result["validation"]["leakage"]["exact"] == 0
    # The validation loss was measured on those rows: the run's data fingerprint is that of
    # (all dataset rows, the file's rows) and nothing else.
    assert result["validation_loss"] is not None
    assert result["reproducibility"]["data_sha256"] == data_fingerprint("instruction", spec.train_rows, spec.validation_rows)
    assert result["reproducibility"]["validation_dataset_sha256"] == result["validation"]["dataset_sha256"]
    with zipfile.ZipFile(zip_path) as archive:
        card = archive.read("README.md").decode()
    assert "- Validation: file holdout, 5 rows" in card
    # Scoring the adapter answers the file's questions (masked), not a share of the training data.
    summary = evaluate_adapter(adapter_id)
    stored = load_evaluation(store, adapter_id)
    assert summary["rows"] == len(HELD_OUT)
    assert [row["prompt"] for row in stored["rows"]] == [row[0] for row in spec.validation_rows]


def test_a_deleted_validation_file_fails_the_job_plainly(make_user, settings, tiny_model_dir):
    user_id, *_ = make_user("valgone")
    store = get_artifact_store()
    with session_scope() as db:
        workspace_id = db.get(User, user_id).workspace_id
        train = _ingest(db, workspace_id, "northwind.csv", SAMPLE_CSV.read_bytes())
        held_out = _ingest(db, workspace_id, "holdout.csv", _csv(HELD_OUT))
        job = jobs.submit_job(
            db,
            settings,
            store,
            workspace_id=workspace_id,
            user_id=None,
            dataset=train,
            task="instruction",
            column_mapping=MAPPING,
            base_model="tiny-llama",
            technique="lora",
            params={"max_steps": 1},
            validation_dataset=held_out,
        )
        job_id = job.id
        # While the job waits, the file cannot be deleted from the site ...
        try:
            dataset_ingest.delete_dataset(db, store, held_out)
            raise AssertionError("a queued job's validation file was deleted")
        except dataset_store.DatasetError as exc:
            assert "still using this dataset" in exc.message
        store.delete(f"datasets/{held_out.id}")  # ... but its files may still vanish underneath
    assert run_training_job(job_id, "worker-valgone") == "failed"
    with session_scope() as db:
        assert "validation file of this job was deleted" in db.get(Job, job_id).error
