"""The playground on a real worker: base and adapter answer the same prompt differently."""

from __future__ import annotations

import time

import pytest

from tests.app.helpers import bearer
from tests.conftest import sign_in
from tests.worker.evaluation.conftest import FACTS

pytestmark = pytest.mark.usefixtures("worker_process")


def test_base_and_adapter_answer_side_by_side(facts_owner, train_adapter, client, make_user):
    _, email, password, token, dataset_id = facts_owner
    adapter_id = train_adapter(dataset_id, "facts", max_steps=60, r=16, alpha=32)
    question, answer = FACTS[0]
    started = client.post(
        "/api/v1/playground", headers=bearer(token), json={"prompt": question, "adapter_ids": [adapter_id], "max_new_tokens": 8}
    )
    assert started.status_code == 202, started.text
    run = started.json()
    assert run["targets"] == ["base", f"adapter:{adapter_id}"]

    deadline = time.monotonic() + 180
    while True:
        state = client.get(f"/api/v1/playground/{run['id']}", headers=bearer(token)).json()
        if state["finished"] or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert state["finished"] and state["error"] is None
    tuned, base = state["answers"][f"adapter:{adapter_id}"], state["answers"].get("base", "")
    assert answer in tuned.lower()
    assert tuned != base

    sign_in(client, email, password)
    with client.stream("GET", f"/playground/{run['id']}/events") as stream:
        body = "".join(stream.iter_text())
    assert '"finished": "1"' in body and '"done": "1"' in body

    _, _, _, stranger = make_user("stranger")
    assert client.get(f"/api/v1/playground/{run['id']}", headers=bearer(stranger)).status_code == 404
    refused = client.post("/api/v1/playground", headers=bearer(stranger), json={"prompt": "hi", "adapter_ids": [adapter_id]})
    assert refused.status_code == 422 and "not in your workspace" in refused.json()["detail"]
