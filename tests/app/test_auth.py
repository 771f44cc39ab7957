"""Every page and API needs a signed-in user; workspaces never see each other's data."""

import re
import zipfile

import pytest
from fastapi.routing import APIRoute

from app.main import app
from tests.app.helpers import SAMPLE_CSV, bearer, upload
from tests.conftest import csrf_from, sign_in

PUBLIC = {
    ("GET", "/login"),
    ("POST", "/login"),
    ("GET", "/health"),
    ("GET", "/invite/{token}"),
    ("POST", "/invite/{token}"),
    ("GET", "/login/sso"),
    ("GET", "/login/sso/callback"),
}


def _protected_routes():
    from app.api import ROUTERS as API_ROUTERS
    from app.web import ROUTERS as PAGE_ROUTERS

    routes = [route for router in (*PAGE_ROUTERS, *API_ROUTERS) for route in router.routes]
    for route in [*app.routes, *routes]:
        if isinstance(route, APIRoute):
            for method in sorted(getattr(route, "methods", None) or {"GET"}):
                if method != "HEAD" and (method, route.path) not in PUBLIC:
                    yield method, re.sub(r"{[^}]+}", "1", route.path)


ROUTES = sorted(set(_protected_routes()))


def test_route_list_covers_pages_and_api():
    paths = {path for _, path in ROUTES}
    assert {"/", "/datasets/1", "/jobs/1", "/adapters/1/download", "/api/v1/datasets", "/api/v1/jobs", "/openapi.json"} <= paths


@pytest.mark.parametrize("method, path", ROUTES)
def test_unauthenticated_requests_are_refused(client, method, path):
    response = client.request(method, path, follow_redirects=False)
    if path.startswith("/v1/"):  # the OpenAI-compatible endpoint answers in OpenAI's error body
        assert response.status_code == 401 and response.json()["error"]["type"] == "authentication_error"
    elif path.startswith("/api/") or path == "/openapi.json":
        assert response.status_code in (401, 403), response.text
        assert "detail" in response.json()
    elif method == "GET":
        assert response.status_code == 303 and response.headers["location"].startswith("/login")
    else:  # unsafe page requests without a session fail the CSRF check or the sign-in check
        assert response.status_code in (303, 401, 403)
        assert response.status_code != 303 or response.headers["location"].startswith("/login")


def test_an_invalid_bearer_token_is_refused(client):
    response = client.get("/api/v1/datasets", headers=bearer("tlr_not-a-real-token"))
    assert response.status_code == 401


def test_wrong_password_shows_a_plain_message(client, make_user):
    _, email, _, _ = make_user()
    token = csrf_from(client.get("/login").text)
    response = client.post("/login", data={"email": email, "password": "wrong password", "csrf_token": token})
    assert response.status_code == 401
    assert "do not match an account" in response.text


def test_forms_without_the_csrf_token_are_refused(client, make_user):
    _, email, password, _ = make_user()
    sign_in(client, email, password)
    response = client.post("/datasets", files={"file": ("a.csv", b"q,a\n1,2\n", "text/csv")})
    assert response.status_code == 403
    assert "did not come from Tailor" in response.text
    response = client.post("/api/v1/datasets", files={"file": ("a.csv", b"q,a\n1,2\n", "text/csv")})
    assert response.status_code == 403


def test_session_api_writes_pass_with_the_csrf_header(client, make_user):
    _, email, password, _ = make_user()
    csrf = sign_in(client, email, password)
    response = client.post("/api/v1/datasets", headers={"X-CSRF-Token": csrf}, files={"file": ("a.csv", b"q,a\n1,2\n3,4\n", "text/csv")})
    assert response.status_code == 201, response.text


def test_user_b_cannot_see_or_download_user_a_data(client, make_user, db, settings):
    from app.models import Adapter, Dataset, Job
    from app.services.adapters import ZIP_NAME, adapter_storage_key
    from app.services.artifacts import get_artifact_store

    _, _, _, token_a = make_user("alice")
    _, email_b, password_b, token_b = make_user("bob")
    dataset = upload(client, token_a, SAMPLE_CSV.read_bytes(), "northwind.csv").json()
    # An adapter of A's, as a finished job leaves it.
    ds_row = db.get(Dataset, dataset["id"])
    job = Job(
        workspace_id=ds_row.workspace_id,
        dataset_id=ds_row.id,
        name="A's job",
        task="instruction",
        column_mapping={"prompt": "question", "response": "answer"},
        base_model="tiny-llama",
        technique="lora",
        params={},
        status="succeeded",
    )
    db.add(job)
    db.flush()
    store = get_artifact_store()
    key = adapter_storage_key(job.id)
    store.path(key).mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(store.path(f"{key}/{ZIP_NAME}"), "w") as archive:
        archive.writestr("adapter_config.json", "{}")
    adapter = Adapter(
        workspace_id=ds_row.workspace_id, job_id=job.id, name="A's adapter", technique="lora", base_model="tiny-llama", storage_key=key
    )
    db.add(adapter)
    db.commit()

    # A can download it; B gets 404 everywhere, in the API and in pages.
    assert client.get(f"/api/v1/adapters/{adapter.id}/download", headers=bearer(token_a)).status_code == 200
    for path in (
        f"/api/v1/datasets/{dataset['id']}",
        f"/api/v1/jobs/{job.id}",
        f"/api/v1/adapters/{adapter.id}",
        f"/api/v1/adapters/{adapter.id}/download",
    ):
        response = client.get(path, headers=bearer(token_b))
        assert response.status_code == 404, path
    assert client.post(f"/api/v1/jobs/{job.id}/cancel", headers=bearer(token_b)).status_code == 404
    assert client.get("/api/v1/datasets", headers=bearer(token_b)).json() == []
    assert client.get("/api/v1/adapters", headers=bearer(token_b)).json() == []
    sign_in(client, email_b, password_b)
    for path in (f"/datasets/{dataset['id']}", f"/jobs/{job.id}", f"/adapters/{adapter.id}/download"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert "in your workspace" in response.text
    assert "A&#39;s adapter" not in client.get("/adapters").text
