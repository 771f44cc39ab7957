"""The training form starts a bake-off when other techniques are ticked."""

from __future__ import annotations

from sqlalchemy import select

from app.db import session_scope
from app.models import Job
from app.services import jobs
from tests.app.helpers import SAMPLE_CSV, upload
from tests.conftest import sign_in


def test_ticking_techniques_starts_one_job_each_under_one_group(client, make_user, tiny_model_dir):
    _, email, password, token = make_user("bakeoff")
    dataset = upload(client, token, SAMPLE_CSV.read_bytes()).json()
    csrf = sign_in(client, email, password)
    form = {
        "csrf_token": csrf,
        "dataset_id": dataset["id"],
        "task": "instruction",
        "prompt_column": "question",
        "response_column": "answer",
        "base_model": "tiny-llama",
        "technique": "lora",
        "param_epochs": "1",
        "bakeoff_techniques": ["ia3", "prompt_tuning"],
    }
    response = client.post("/jobs", data=form, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"].startswith("/groups/")
    group_id = response.headers["location"].rsplit("/", 1)[1]
    with session_scope() as db:
        group = list(db.scalars(select(Job).where(Job.group_id == group_id).order_by(Job.id)))
        assert [j.technique for j in group] == ["lora", "ia3", "prompt_tuning"]
        assert all(j.params["epochs"] == 1 and j.status == "queued" for j in group)
        for job in group:  # keep the session's worker free for other tests
            jobs.request_cancel(db, job)
    page = client.get(f"/groups/{group_id}")
    assert page.status_code == 200 and page.text.count("/jobs/") == 3

    alone = dict(form, bakeoff_techniques=["lora"])
    refused = client.post("/jobs", data=alone)
    assert refused.status_code == 422 and "at least two techniques" in refused.text
