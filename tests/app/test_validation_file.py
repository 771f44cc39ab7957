"""A separately uploaded validation file: chosen on the form or in the API, checked (same
workspace, mapped columns present, usable rows), stored on the job and shown on its page."""

from __future__ import annotations

import csv
import io

from app.db import session_scope
from app.models import Job
from tests.app.helpers import SAMPLE_CSV, bearer, upload
from tests.conftest import csrf_from, sign_in


def _csv(header: list[str], rows: list[list[str]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode()


def _sample_rows() -> list[dict[str, str]]:
    with open(SAMPLE_CSV, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


HELD_OUT = [
    ["Can I pay with a gift card and a credit card together?", "Yes: enter the gift card first, then pay the rest by card.", "payments"],
    ["Do you repair zips on jackets?", "We do, free for the first two years; send it in with the repair form.", "returns"],
    ["Is the Alpine tent waterproof?", "Yes, its flysheet holds a 3,000 mm water column.", "products"],
]


def _job_body(dataset_id: int, **extra) -> dict:
    return {
        "dataset_id": dataset_id,
        "column_mapping": {"prompt": "question", "response": "answer"},
        "base_model": "tiny-llama",
        "technique": "lora",
        "params": {"max_steps": 1},
        **extra,
    }


def test_api_job_validates_on_the_file_and_reports_it(client, make_user, tiny_model_dir):
    _, _, _, token = make_user("valfile")
    train = upload(client, token, SAMPLE_CSV.read_bytes()).json()
    leaked = _sample_rows()[0]
    held_out = upload(
        client,
        token,
        _csv(["question", "answer", "category"], HELD_OUT + [[leaked["question"], leaked["answer"], leaked["category"]]]),
        "holdout.csv",
    ).json()
    created = client.post("/api/v1/jobs", headers=bearer(token), json=_job_body(train["id"], validation_dataset_id=held_out["id"]))
    assert created.status_code == 201, created.text
    job = created.json()
    assert job["validation_dataset_id"] == held_out["id"]
    validation = job["validation"]
    assert validation["source"] == "file" and validation["dataset_id"] == held_out["id"] and validation["rows"] == 4
    assert validation["train_rows"] == train["row_count"]  # no share is held out of the training data
    assert validation["leakage"]["exact"] == 1 and "1 of 4 validation rows also appear in training" in validation["leakage"]["message"]
    assert client.get(f"/api/v1/jobs/{job['id']}", headers=bearer(token)).json()["validation"]["rows"] == 4
    # The job page says where its validation rows come from, and warns of the leaked row.
    page = client.get(f"/jobs/{job['id']}", headers=bearer(token)).text
    assert "Validation" in page and "holdout" in page and "4 rows" in page
    assert 'id="job-leakage"' in page
    with session_scope() as db:
        assert db.get(Job, job["id"]).validation_dataset_id == held_out["id"]
    client.post(f"/api/v1/jobs/{job['id']}/cancel", headers=bearer(token))
    # A split job says so instead.
    split = client.post("/api/v1/jobs", headers=bearer(token), json=_job_body(train["id"])).json()
    assert split["validation"]["source"] == "split" and split["validation_dataset_id"] is None
    assert split["validation"]["rows"] + split["validation"]["train_rows"] == train["row_count"]
    assert "10% split" in client.get(f"/jobs/{split['id']}", headers=bearer(token)).text
    client.post(f"/api/v1/jobs/{split['id']}/cancel", headers=bearer(token))


def test_validation_file_problems_get_plain_answers(client, make_user, tiny_model_dir):
    _, _, _, token = make_user("valbad")
    _, _, _, other_token = make_user("valother")
    train = upload(client, token, SAMPLE_CSV.read_bytes()).json()
    wrong_columns = upload(client, token, _csv(["question", "reply"], [[q, a] for q, a, _ in HELD_OUT]), "wrong.csv").json()
    empty_answers = upload(client, token, _csv(["question", "answer"], [[q, ""] for q, _, _ in HELD_OUT]), "empty.csv").json()
    theirs = upload(client, other_token, _csv(["question", "answer"], [[q, a] for q, a, _ in HELD_OUT]), "theirs.csv").json()

    def refused(validation_id: int) -> str:
        response = client.post("/api/v1/jobs", headers=bearer(token), json=_job_body(train["id"], validation_dataset_id=validation_id))
        assert response.status_code == 422, response.text
        return response.json()["detail"]["errors"]["validation_dataset"]

    message = refused(wrong_columns["id"])
    assert "has no column named 'answer'" in message and "mapped as the response" in message and "question, reply" in message
    assert "nothing to check against" in refused(empty_answers["id"])
    assert "another dataset than the training data" in refused(train["id"])
    # Another workspace's dataset does not exist as far as this user can tell (as for the training data).
    other = client.post("/api/v1/jobs", headers=bearer(token), json=_job_body(train["id"], validation_dataset_id=theirs["id"]))
    assert other.status_code == 404
    bakeoff = client.post(
        "/api/v1/bakeoffs",
        headers=bearer(token),
        json={
            "dataset_id": train["id"],
            "column_mapping": {"prompt": "question", "response": "answer"},
            "base_model": "tiny-llama",
            "techniques": ["lora", "ia3"],
            "params": {"max_steps": 1},
            "validation_dataset_id": wrong_columns["id"],
        },
    )
    assert bakeoff.status_code == 422 and "has no column named 'answer'" in bakeoff.json()["detail"]["errors"]["validation_dataset"]
    with session_scope() as db:
        assert db.query(Job).filter(Job.dataset_id == train["id"]).count() == 0


def test_the_form_offers_other_datasets_and_keeps_the_choice_on_errors(client, make_user, tiny_model_dir):
    _, email, password, token = make_user("valform")
    csrf = sign_in(client, email, password)
    train = upload(client, token, SAMPLE_CSV.read_bytes()).json()
    held_out = upload(client, token, _csv(["question", "reply"], [[q, a] for q, a, _ in HELD_OUT]), "holdout-v2.csv").json()
    page = client.get(f"/datasets/{train['id']}").text
    assert 'name="validation_dataset_id"' in page and f'value="{held_out["id"]}"' in page and "lacks answer" in page
    assert 'href="/datasets/new"' in page
    form = {
        "csrf_token": csrf_from(page) or csrf,
        "dataset_id": str(train["id"]),
        "task": "instruction",
        "prompt_column": "question",
        "response_column": "answer",
        "base_model": "tiny-llama",
        "technique": "lora",
        "param_max_steps": "1",
        "validation_dataset_id": str(held_out["id"]),
    }
    response = client.post("/jobs", data=form)
    assert response.status_code == 422
    assert "has no column named &#39;answer&#39;" in response.text
    assert f'<option value="{held_out["id"]}" selected' in response.text


def test_the_estimate_trains_on_every_row_when_a_file_validates(tiny_model_dir):
    from app.domain.estimates import read_model_config
    from app.models import Dataset
    from app.services import job_estimates

    dataset = Dataset(row_count=200, columns=["question", "answer"], profile=None)
    params = {"epochs": 1, "batch_size": 8, "max_length": 128, "validation_fraction": 0.1}
    config = read_model_config(str(tiny_model_dir))
    split = job_estimates.estimate_for(dataset, config, "lora", params, "instruction", {"prompt": "question", "response": "answer"})
    with_file = job_estimates.estimate_for(
        dataset, config, "lora", params, "instruction", {"prompt": "question", "response": "answer"}, validation_rows=50
    )
    assert with_file["steps"] == 25 and split["steps"] == 23  # 200 rows train instead of 180


def test_a_bakeoff_from_the_form_validates_every_technique_on_the_file(client, make_user, tiny_model_dir):
    from sqlalchemy import select

    from app.services import jobs

    _, email, password, token = make_user("valbake")
    csrf = sign_in(client, email, password)
    train = upload(client, token, SAMPLE_CSV.read_bytes()).json()
    held_out = upload(client, token, _csv(["question", "answer", "category"], HELD_OUT), "holdout-bake.csv").json()
    form = {
        "csrf_token": csrf,
        "dataset_id": str(train["id"]),
        "task": "instruction",
        "prompt_column": "question",
        "response_column": "answer",
        "base_model": "tiny-llama",
        "technique": "lora",
        "param_max_steps": "1",
        "validation_dataset_id": str(held_out["id"]),
        "bakeoff_techniques": ["ia3"],
    }
    response = client.post("/jobs", data=form, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"].startswith("/groups/")
    with session_scope() as db:
        group = list(db.scalars(select(Job).where(Job.group_id == response.headers["location"].rsplit("/", 1)[1])))
        assert len(group) == 2 and all(j.validation_dataset_id == held_out["id"] and j.result["validation"]["rows"] == 3 for j in group)
        for job in group:
            jobs.request_cancel(db, job)


def test_a_classifier_validation_file_with_labels_training_never_shows_is_refused(client, make_user, tiny_model_dir):
    _, _, _, token = make_user("vallabels")
    train = upload(client, token, SAMPLE_CSV.read_bytes()).json()
    unseen = upload(
        client,
        token,
        _csv(
            ["question", "answer", "category"], [[q, a, c] for q, a, c in HELD_OUT] + [["Do you buy back old tents?", "Yes.", "trade-in"]]
        ),
        "unseen.csv",
    ).json()
    known = upload(
        client, token, _csv(["question", "answer", "category"], [[q, a, c] for q, a, c in HELD_OUT if c != "products"]), "known.csv"
    ).json()  # the training data says "product", not "products"
    body = {
        "dataset_id": train["id"],
        "task": "classification",
        "column_mapping": {"text": "question", "label": "category"},
        "base_model": "tiny-llama",
        "technique": "lora",
        "params": {"max_steps": 1},
    }

    refused = client.post("/api/v1/jobs", headers=bearer(token), json=dict(body, validation_dataset_id=unseen["id"]))
    assert refused.status_code == 422
    message = refused.json()["detail"]["errors"]["validation_dataset"]
    assert "labels the training data never shows: 'products', 'trade-in'." in message and "cannot learn a class it has not seen" in message

    accepted = client.post("/api/v1/jobs", headers=bearer(token), json=dict(body, validation_dataset_id=known["id"]))
    assert accepted.status_code == 201, accepted.text
    client.post(f"/api/v1/jobs/{accepted.json()['id']}/cancel", headers=bearer(token))
