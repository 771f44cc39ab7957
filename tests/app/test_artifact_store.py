"""The S3 artifact store against a real S3-compatible server (moto in server mode): web and
worker on "different machines" (separate caches) share datasets and adapters through the bucket."""

from __future__ import annotations

import zipfile

import pytest

from app.services.artifacts import ArtifactKeyError, LocalArtifactStore, S3ArtifactStore
from tests.s3_server import bucket, s3_endpoint  # noqa: F401 - fixtures


def _store(bucket, cache_dir) -> S3ArtifactStore:
    client, name = bucket
    return S3ArtifactStore(name, "team-a", cache_dir, client)


def test_files_and_folders_travel_between_machines_through_the_bucket(bucket, tmp_path):
    web, worker = _store(bucket, tmp_path / "web-cache"), _store(bucket, tmp_path / "worker-cache")
    upload = web.temp_path(".csv")
    upload.write_text("question,answer\nhi,hello\n")
    web.put_file("datasets/1/rows.csv", upload)
    folder = worker.temp_path()
    (folder / "sub").mkdir(parents=True)
    (folder / "adapter_config.json").write_text("{}")
    (folder / "sub" / "weights.safetensors").write_bytes(b"\x00" * 1000)
    worker.put_file("adapters/job-1", folder)

    assert worker.path("datasets/1/rows.csv").read_text() == "question,answer\nhi,hello\n"
    fetched = web.path("adapters/job-1")
    assert (fetched / "adapter_config.json").read_text() == "{}"
    assert (fetched / "sub" / "weights.safetensors").stat().st_size == 1000
    assert web.exists("adapters/job-1") and not web.exists("adapters/job-2")

    worker.delete("adapters/job-1")
    third = _store(bucket, tmp_path / "third-cache")
    assert not third.exists("adapters/job-1") and not third.path("adapters/job-1").exists()
    client, name = bucket
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=name).get("Contents", [])]
    assert keys == ["team-a/datasets/1/rows.csv"]


@pytest.mark.parametrize("key", ["../escape", "datasets/../../etc/passwd", "/etc/passwd"])
def test_keys_cannot_leave_the_store(bucket, tmp_path, key):
    with pytest.raises(ArtifactKeyError):
        _store(bucket, tmp_path / "cache").path(key)
    with pytest.raises(ArtifactKeyError):
        LocalArtifactStore(tmp_path / "local").path(key)


def test_a_job_trains_from_the_bucket_and_its_adapter_downloads_elsewhere(
    bucket, tmp_path, monkeypatch, make_user, settings, tiny_model_dir
):
    """Upload on the web machine, train on a worker machine, download on a third: only the bucket is shared."""
    import worker.job_runner as job_runner
    from app.db import session_scope
    from app.models import Adapter, User
    from app.services import dataset_ingest, jobs
    from app.services.adapters import adapter_zip_path
    from tests.app.helpers import SAMPLE_CSV

    web, worker_store, other_web = (_store(bucket, tmp_path / name) for name in ("web", "worker", "other-web"))
    user_id, *_ = make_user("s3")
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
            dataset=dataset,
            task="instruction",
            column_mapping={"prompt": "question", "response": "answer"},
            base_model="tiny-llama",
            technique="lora",
            params={"max_steps": 3},
        )
        job_id = job.id

    monkeypatch.setattr(job_runner, "get_artifact_store", lambda: worker_store)
    assert job_runner.run_training_job(job_id, "remote-worker") == "succeeded"

    with session_scope() as db:
        adapter = db.query(Adapter).filter_by(job_id=job_id).one()
        with zipfile.ZipFile(adapter_zip_path(other_web, adapter)) as archive:
            assert {"adapter_config.json", "adapter_model.safetensors", "README.md"} <= set(archive.namelist())


def test_a_checkpoint_rewritten_in_place_reaches_the_next_machine_in_its_latest_version(bucket, tmp_path):
    first, second = _store(bucket, tmp_path / "first"), _store(bucket, tmp_path / "second")
    key = "work/job-7/checkpoint"
    assert not second.refresh(key).exists()  # nothing yet: the run starts from scratch

    folder = first.path(key)
    folder.mkdir(parents=True)
    (folder / "checkpoint.pt").write_bytes(b"step 1")
    (folder / "extra.bin").write_bytes(b"old")
    first.mirror(key)
    assert (second.refresh(key) / "checkpoint.pt").read_bytes() == b"step 1"

    (folder / "checkpoint.pt").write_bytes(b"step 2")
    (folder / "extra.bin").unlink()
    (folder / ".checkpoint.pt.partial").write_bytes(b"half-written")  # never published
    first.mirror(key)
    # The second machine's cache holds step 1; refresh must not trust it.
    assert sorted(p.name for p in second.refresh(key).iterdir()) == ["checkpoint.pt"]
    assert (second.path(key) / "checkpoint.pt").read_bytes() == b"step 2"

    first.delete(key)
    assert not second.refresh(key).exists()


def test_a_local_store_keeps_checkpoints_where_they_are_written(tmp_path):
    store = LocalArtifactStore(tmp_path)
    folder = store.path("work/job-1/checkpoint")
    folder.mkdir(parents=True)
    (folder / "checkpoint.pt").write_bytes(b"x")
    store.mirror("work/job-1/checkpoint")
    assert store.refresh("work/job-1/checkpoint") == folder and (folder / "checkpoint.pt").read_bytes() == b"x"
