"""A job that cannot fit in the memory of the worker that would take it is refused up front."""

from __future__ import annotations

from sqlalchemy import delete

from app.db import session_scope
from app.models import WorkerNode
from app.services.workers import DeviceInfo, record_worker_heartbeat
from tests.app.helpers import SAMPLE_CSV, bearer, upload


def test_a_job_too_big_for_the_live_gpu_is_refused_with_the_numbers(client, make_user, tiny_model_dir):
    _, _, _, token = make_user("fits")
    dataset = upload(client, token, SAMPLE_CSV.read_bytes()).json()
    body = {
        "dataset_id": dataset["id"],
        "column_mapping": {"prompt": "question", "response": "answer"},
        "base_model": "tiny-llama",
        "technique": "lora",
        "params": {"batch_size": 64, "max_length": 2048},
    }
    with session_scope() as db:
        record_worker_heartbeat(db, name="tiny-gpu@tests", queues="gpu", device=DeviceInfo("cuda:0 Tiny Test GPU", 16 * 2**20))
    try:
        refused = client.post("/api/v1/jobs", headers=bearer(token), json=body)
        assert refused.status_code == 422
        message = refused.json()["detail"]["errors"]["batch_size"]
        assert "more than the worker that would take it has (0.0 GB)" in message and "Lower the batch size" in message
    finally:
        with session_scope() as db:
            db.execute(delete(WorkerNode).where(WorkerNode.name == "tiny-gpu@tests"))
    accepted = client.post("/api/v1/jobs", headers=bearer(token), json={**body, "params": {"max_steps": 1}})
    assert accepted.status_code == 201, accepted.text
    client.post(f"/api/v1/jobs/{accepted.json()['id']}/cancel", headers=bearer(token))
