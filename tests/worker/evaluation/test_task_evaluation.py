"""Classification and text (continued training) adapters evaluated on their held-out rows: labels
against the majority class with a confusion matrix, continuations against the rest of the text,
and held-out loss and perplexity with intervals; shown on the comparison page, its JSON and CSV,
and in the shipped model card."""

from __future__ import annotations

import csv
import io
import math
import zipfile

import pytest

from app.config import get_settings
from app.db import session_scope
from app.models import Adapter, Dataset, User
from app.services import dataset_ingest, jobs
from app.services.adapters import adapter_zip_path
from app.services.artifacts import get_artifact_store
from app.services.evaluations import load_evaluation
from tests.app.helpers import bearer
from tests.conftest import sign_in
from worker.evaluation.runner import evaluate_adapter
from worker.job_runner import run_training_job

_ITEMS = "jacket shirt coat dress sleeve collar pocket card boots tent".split()
# Three labels, one of them rarer, so the majority class is a real (and beatable) baseline.
TICKETS = [
    row
    for item in _ITEMS
    for row in (
        (f"I want to return the {item} and get my money back.", "returns"),
        (f"When will my {item} order arrive? It has not shipped yet.", "orders"),
        (f"Please send the {item} back, I would like a refund.", "returns"),
    )
] + [(f"The {item} broke after one week, the seam split.", "faults") for item in _ITEMS[:6]]

BRAND_COPY = [
    f"Our {item} is made in Donegal from recycled wool and waxed cotton, tested on the Atlantic coast for three winters, "
    f"and repaired for free for as long as you own it, because a good {item} should outlive its first owner."
    for item in _ITEMS
]


def _dataset(user_id: int, name: str, header: str, rows: list[tuple]) -> int:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header.split(","))
    writer.writerows(rows * 2)
    with session_scope() as db:
        user = db.get(User, user_id)
        dataset, _ = dataset_ingest.ingest_upload(
            db,
            get_artifact_store(),
            workspace_id=user.workspace_id,
            user_id=user.id,
            filename=name,
            source=io.BytesIO(buffer.getvalue().encode()),
            limit_bytes=10**6,
        )
        return dataset.id


def _train(settings, dataset_id: int, task: str, mapping: dict, name: str, technique: str = "lora", **params) -> int:
    with session_scope() as db:
        dataset = db.get(Dataset, dataset_id)
        job = jobs.submit_job(
            db,
            settings,
            get_artifact_store(),
            workspace_id=dataset.workspace_id,
            user_id=None,
            dataset=dataset,
            task=task,
            column_mapping=mapping,
            base_model="tiny-llama",
            technique=technique,
            name=name,
            params={
                "max_steps": 30,
                "learning_rate": 1e-2,
                "batch_size": 8,
                "epochs": 20,
                "validation_fraction": 0.25,
                "max_length": 64,
                **params,
            },
        )
        job_id = job.id
    assert run_training_job(job_id, "eval-worker") == "succeeded"
    with session_scope() as db:
        return db.query(Adapter).filter_by(job_id=job_id).one().id


@pytest.fixture
def tickets(make_user, settings, tiny_model_dir):
    user_id, email, password, token = make_user("tickets")
    return email, password, token, _dataset(user_id, "tickets.csv", "ticket,team", TICKETS)


def test_classifier_scored_against_the_majority_class_everywhere(tickets, settings, client):
    email, password, token, dataset_id = tickets
    mapping = {"text": "ticket", "label": "team"}
    ids = [
        _train(settings, dataset_id, "classification", mapping, "tickets r8", r=8, alpha=16),
        _train(settings, dataset_id, "classification", mapping, "tickets slow", learning_rate=1e-4, max_steps=4),
    ]

    summary = evaluate_adapter(ids[0])

    assert summary["task"] == "classification" and summary["base_kind"] == "majority_class"
    assert summary["baseline_label"] == "returns"  # the most common label among the training rows
    confusion = summary["confusion"]
    assert confusion["labels"] == ["faults", "orders", "returns"]
    assert sum(map(sum, confusion["matrix"])) == summary["rows"] >= 9
    for metric in ("accuracy", "macro_f1", "validation_loss"):
        value = summary["adapter"][metric]
        assert value["low"] <= value["value"] <= value["high"], metric
    assert "perplexity" not in summary["adapter"]  # a label loss has no per-token perplexity
    diagonal = sum(confusion["matrix"][i][i] for i in range(3))
    assert summary["adapter"]["accuracy"]["value"] == pytest.approx(diagonal / summary["rows"])
    assert summary["adapter"]["accuracy"]["value"] > summary["base"]["accuracy"]["value"]
    # Always answering "returns": every row of that label right, none of the others.
    stored = load_evaluation(get_artifact_store(), ids[0])
    gold = stored["predictions"]["gold"]
    assert summary["base"]["accuracy"]["value"] == pytest.approx(gold.count("returns") / len(gold))
    assert {row["base"] for row in stored["rows"]} == {"returns"}
    evaluate_adapter(ids[1])

    data = client.get(f"/api/v1/compare?ids={ids[0]},{ids[1]}", headers=bearer(token)).json()
    assert data["task"] == "classification" and data["base_label"].startswith("the majority-class baseline")
    assert data["adapters"][0]["confusion"] == confusion
    assert {"accuracy", "macro_f1", "validation_loss"} <= set(data["adapters"][0]["metrics"])
    assert any(v.startswith("tickets r8 is better than the majority-class baseline") and "accuracy" in v for v in data["verdicts"])
    assert data["best"]["metric:validation_loss"] == min(
        ids, key=lambda i: next(r["metrics"]["validation_loss"]["value"] for r in data["adapters"] if r["adapter_id"] == i)
    )
    assert any("macro-F1" in v for v in data["verdicts"])

    sign_in(client, email, password)
    page = client.get(f"/compare?ids={ids[0]}&ids={ids[1]}").text
    assert 'id="confusion-matrices"' in page and page.count('class="confusion-matrix"') == 2
    assert "The majority-class baseline (always" in page and "True label" in page
    exported = list(csv.DictReader(io.StringIO(client.get(f"/compare.csv?ids={ids[0]},{ids[1]}").text)))
    assert float(exported[0]["macro_f1_low"]) <= float(exported[0]["macro_f1"]) <= float(exported[0]["macro_f1_high"])
    assert '"matrix"' in exported[0]["confusion_matrix"]

    with session_scope() as db:
        adapter = db.get(Adapter, ids[0])
        with zipfile.ZipFile(adapter_zip_path(get_artifact_store(), adapter)) as archive:
            card = archive.read("README.md").decode()
    assert "| Accuracy |" in card and "| Macro-F1 |" in card and "majority class" in card
    assert (
        "Confusion matrix (rows: true label, columns: predicted label)" in card
        and "| true \\ predicted | faults | orders | returns |" in card
    )


def test_text_adapter_continues_held_out_texts_with_loss_and_perplexity(make_user, settings, tiny_model_dir):
    user_id, *_ = make_user("copywriter")
    dataset_id = _dataset(user_id, "brand.csv", "copy", [(t,) for t in BRAND_COPY])
    adapter_id = _train(settings, dataset_id, "text", {"text_columns": ["copy"]}, "brand voice", max_steps=40)

    summary = evaluate_adapter(adapter_id, max_rows=4)

    assert summary["task"] == "text" and summary["rows"] == 4
    stored = load_evaluation(get_artifact_store(), adapter_id)
    for row in stored["rows"]:  # the start of a held-out text, and the words that follow it
        text = next(t for t in BRAND_COPY if t.startswith(row["prompt"]))
        assert text[len(row["prompt"]) :].split()[:5] == row["reference"].split()[:5]
    for side in ("adapter", "base"):
        loss, ppl = summary[side]["validation_loss"], summary[side]["perplexity"]
        assert loss["low"] <= loss["value"] <= loss["high"]
        assert ppl["value"] == pytest.approx(math.exp(loss["value"])) and ppl["low"] == pytest.approx(math.exp(loss["low"]))
    # Trained on these very texts (repeated), the adapter predicts them far better than the base.
    assert summary["adapter"]["validation_loss"]["high"] < summary["base"]["validation_loss"]["low"]
    assert summary["adapter"]["rouge_l"]["value"] > summary["base"]["rouge_l"]["value"]


def test_classification_and_text_jobs_queue_their_evaluation(tickets, settings, monkeypatch):
    *_, dataset_id = tickets
    monkeypatch.setattr(get_settings(), "auto_evaluate", True)
    adapter_id = _train(settings, dataset_id, "classification", {"text": "ticket", "label": "team"}, "auto", max_steps=2)
    with session_scope() as db:
        # Queued, or already taken by the session's shared Celery worker when an earlier test started
        # one (a CI run saw "running"); never evaluated without being queued.
        assert db.get(Adapter, adapter_id).evaluation_state in ("queued", "running", "done")
    monkeypatch.setattr(get_settings(), "auto_evaluate", False)
    adapter_id = _train(settings, dataset_id, "classification", {"text": "ticket", "label": "team"}, "manual", max_steps=2)
    with session_scope() as db:
        assert db.get(Adapter, adapter_id).evaluation_state is None


def test_full_fine_tune_is_evaluated_against_the_base_loaded_beside_it(make_user, settings, tiny_model_dir):
    user_id, *_ = make_user("full-ft")
    dataset_id = _dataset(user_id, "brand-full.csv", "copy", [(t,) for t in BRAND_COPY])
    adapter_id = _train(
        settings, dataset_id, "text", {"text_columns": ["copy"]}, "brand full", technique="full", max_steps=15, learning_rate=1e-3
    )

    summary = evaluate_adapter(adapter_id, max_rows=2)

    assert summary["rows"] == 2 and {"rouge_l", "validation_loss", "perplexity"} <= set(summary["base"])
    assert summary["adapter"]["validation_loss"]["high"] < summary["base"]["validation_loss"]["low"]
