"""Two machines that share only the database, the broker and a bucket: a job whose worker dies on
the first resumes on the second from the checkpoint the first mirrored into the bucket."""

from __future__ import annotations

import time

from app.db import session_scope
from app.models import Dataset, User
from app.services import dataset_ingest, jobs
from app.services.artifacts import S3ArtifactStore
from tests.app.helpers import SAMPLE_CSV
from tests.reliability.test_faults import adapter_count, job_state, wait_until, wake
from tests.s3_server import bucket, s3_endpoint  # noqa: F401 - fixtures


def _objects(client, bucket_name: str, prefix: str) -> list[str]:
    return [o["Key"] for o in client.list_objects_v2(Bucket=bucket_name, Prefix=prefix).get("Contents", [])]


def test_a_job_killed_on_one_machine_resumes_on_another_from_the_bucket(
    workers, own_redis, make_user, settings, bucket, s3_endpoint, tmp_path
):
    client, bucket_name = bucket
    machines = {}
    for name in ("machine-a", "machine-b"):
        data_dir = tmp_path / name
        data_dir.mkdir()
        (data_dir / "models").symlink_to(settings.models_dir)  # the base model is installed on both
        machines[name] = {
            "TAILOR_DATA_DIR": data_dir,
            "TAILOR_DATABASE_URL": settings.resolved_database_url,
            "TAILOR_ARTIFACT_STORE_URL": f"s3://{bucket_name}/team",
            "TAILOR_S3_ENDPOINT_URL": s3_endpoint,
        }
    web = S3ArtifactStore(bucket_name, "team", tmp_path / "web-cache", client)
    user_id, *_ = make_user("bucket")
    with session_scope() as db, open(SAMPLE_CSV, "rb") as f:
        user = db.get(User, user_id)
        dataset, _ = dataset_ingest.ingest_upload(
            db, web, workspace_id=user.workspace_id, user_id=user.id, filename="northwind.csv", source=f, limit_bytes=10**8
        )
        job = jobs.submit_job(
            db,
            settings,
            web,
            workspace_id=user.workspace_id,
            user_id=None,
            dataset=db.get(Dataset, dataset.id),
            task="instruction",
            column_mapping={"prompt": "question", "response": "answer"},
            base_model="tiny-llama",
            technique="lora",
            params={"learning_rate": 3e-3, "epochs": 1, "batch_size": 2, "checkpoint_minutes": 1e-6},
        )
        job_id = job.id
    checkpoint = f"team/work/job-{job_id}/checkpoint/checkpoint.pt"

    workers.start("first@machine-a", **machines["machine-a"])
    wake(own_redis.url, job_id)
    wait_until(
        lambda: job_state(job_id).step >= 3 and checkpoint in _objects(client, bucket_name, "team/work/"), 180, "a checkpoint in the bucket"
    )
    workers.kill("first@machine-a")
    assert job_state(job_id).status == "running"

    time.sleep(2.5)
    workers.start("second@machine-b", TAILOR_HEARTBEAT_STALE_SECONDS=2, **machines["machine-b"])
    done = wait_until(lambda: (j := job_state(job_id)).is_finished and j, 240, "the job to finish on machine b")
    assert done.status == "succeeded", done.error
    assert done.attempt == 2 and done.worker_name == "second@machine-b"
    assert done.result["resumed_from_step"] >= 3  # continued, not started over
    assert adapter_count(job_id) == 1
    assert _objects(client, bucket_name, f"team/adapters/job-{job_id}")  # the adapter is in the bucket
    assert not _objects(client, bucket_name, f"team/work/job-{job_id}/")  # and the checkpoint is gone
    assert not (tmp_path / "machine-b" / "artifact-cache" / "work" / f"job-{job_id}" / "checkpoint").exists()
