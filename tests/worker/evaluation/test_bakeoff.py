"""A bake-off on the real worker: two techniques trained and scored, then a recommendation."""

from __future__ import annotations

import time

import pytest

from tests.app.helpers import bearer
from tests.conftest import sign_in

pytestmark = pytest.mark.usefixtures("worker_process")


def test_bakeoff_trains_each_technique_and_recommends_one(facts_owner, client, make_user):
    _, email, password, token, dataset_id = facts_owner
    started = client.post(
        "/api/v1/bakeoffs",
        headers=bearer(token),
        json={
            "dataset_id": dataset_id,
            "column_mapping": {"prompt": "question", "response": "answer"},
            "base_model": "tiny-llama",
            "techniques": ["lora", "ia3"],
            "params": {"max_steps": 30, "batch_size": 8, "validation_fraction": 0.15},
        },
    )
    assert started.status_code == 201, started.text
    group = started.json()
    assert len(group["job_ids"]) == 2

    deadline = time.monotonic() + 420
    while True:
        state = client.get(f"/api/v1/groups/{group['group_id']}", headers=bearer(token)).json()
        if state["finished"] or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert state["finished"], state
    assert [j["technique"] for j in state["jobs"]] == ["lora", "ia3"]
    assert all(j["status"] == "succeeded" and j["evaluation_state"] == "done" for j in state["jobs"]), state["jobs"]
    assert "scored best" in state["recommendation"]
    assert ("came within noise" in state["recommendation"]) or ("clearly behind" in state["recommendation"])

    sign_in(client, email, password)
    page = client.get(group["url"])
    assert page.status_code == 200 and state["recommendation"] in page.text.replace("&#39;", "'")
    assert "hx-trigger" not in page.text.split('id="group-status"')[1].split(">")[0]
    assert client.get(state["compare_url"]).status_code == 200

    refused = client.post(
        "/api/v1/bakeoffs",
        headers=bearer(token),
        json={
            "dataset_id": dataset_id,
            "column_mapping": {"prompt": "question", "response": "answer"},
            "base_model": "tiny-llama",
            "techniques": ["lora"],
        },
    )
    assert refused.status_code == 422 and "at least two techniques" in refused.json()["detail"]["errors"]["bakeoff"]
    _, _, _, stranger = make_user("stranger")
    assert client.get(f"/api/v1/groups/{group['group_id']}", headers=bearer(stranger)).status_code == 404
