"""API fuzzing with schemathesis against the app's own /openapi.json, signed in as a user who has a
dataset, a job and an adapter: whatever schemathesis sends, no operation answers with a 5xx.

In-process through the ASGI app (no server to start); a few examples per operation keep it to
about a minute on two cores (marked slow; 71 operations)."""

from __future__ import annotations

import zipfile

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error

from app.db import session_scope
from app.models import Adapter, User
from app.services.adapters import ZIP_NAME
from app.services.artifacts import get_artifact_store
from tests.app.helpers import SAMPLE_CSV, bearer, upload

EXAMPLES_PER_OPERATION = 3


@pytest.fixture(scope="module")
def fuzz_user(tiny_model_dir):
    """A user with a dataset, a queued job on it and an adapter of that job (files included)."""
    from fastapi.testclient import TestClient

    from app.main import app
    from app.services.accounts import create_api_token, create_user

    with session_scope() as db:
        user = create_user(db, "fuzz@example.com", "correct horse battery")
        token = create_api_token(db, user)
        user_id = user.id
    with TestClient(app) as client:
        dataset = upload(client, token, SAMPLE_CSV.read_bytes(), "fuzz.csv").json()
        job = client.post(
            "/api/v1/jobs",
            headers=bearer(token),
            json={
                "dataset_id": dataset["id"],
                "base_model": "tiny-llama",
                "technique": "lora",
                "column_mapping": {"prompt": "question", "response": "answer"},
                "params": {"epochs": 1},
            },
        )
        assert job.status_code == 201, job.text
    store = get_artifact_store()
    with session_scope() as db:
        workspace_id = db.get(User, user_id).workspace_id
        adapter = Adapter(
            workspace_id=workspace_id, job_id=job.json()["id"], name="fuzzed", technique="lora", base_model="tiny-llama", storage_key=""
        )
        db.add(adapter)
        db.flush()
        adapter.storage_key = f"adapters/fuzzed-{adapter.id}"
        folder = store.path(adapter.storage_key)
        folder.mkdir(parents=True)
        with zipfile.ZipFile(folder / ZIP_NAME, "w") as archive:
            archive.writestr("adapter_config.json", "{}")
    return {"token": token, "dataset_id": dataset["id"], "job_id": job.json()["id"], "adapter_id": adapter.id}


def _schema():
    """The app's own OpenAPI document (what GET /openapi.json serves to a signed-in client), fuzzed in-process."""
    from app.main import app

    loaded = schemathesis.openapi.from_dict(app.openapi())
    loaded.app = app
    return loaded


schema = _schema()


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    derandomize=True,  # the same examples every run: a failure here is reproducible
    database=None,
    suppress_health_check=list(HealthCheck),
    phases=[Phase.explicit, Phase.generate, Phase.shrink],
)
def test_no_operation_answers_with_a_server_error(case, fuzz_user):
    """Each generated request as it is (ids that mostly name nothing), then once more on the user's
    own dataset, job and adapter, so that the routes behind the 404 are fuzzed too."""
    headers = bearer(fuzz_user["token"])
    case.validate_response(case.call(headers=headers), checks=[not_a_server_error])
    own = {name: fuzz_user[name] for name in case.path_parameters or {} if name in fuzz_user}
    if own:
        case.path_parameters = {**case.path_parameters, **own}
        case.validate_response(case.call(headers=headers), checks=[not_a_server_error])
