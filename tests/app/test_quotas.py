"""Per-workspace quotas: administrators set them (API and page, audited), owners see usage against
them, and a workspace over one gets a plain refusal naming the limit — 403 for queued jobs and GPU
hours, 429 with Retry-After for requests per minute (counted by `limits` on the real Redis)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from app.db import session_scope
from app.models import Job, JobAttempt, JobStatus, User
from app.services import quotas
from tests.app.helpers import SAMPLE_CSV, bearer, upload
from tests.conftest import sign_in

JOB = {
    "column_mapping": {"prompt": "question", "response": "answer"},
    "base_model": "tiny-llama",
    "technique": "lora",
    "params": {"max_steps": 1},
}


@pytest.fixture
def admin():
    """An instance administrator (in a workspace of their own) with an API token."""
    from app.services.accounts import create_api_token, create_user

    email, password = f"admin-{uuid.uuid4().hex[:8]}@example.com", "correct horse battery"
    with session_scope() as db:
        user = create_user(db, email, password, is_admin=True)
        return {"id": user.id, "email": email, "password": password, "token": create_api_token(db, user)}


def _workspace_of(user_id: int) -> int:
    with session_scope() as db:
        return db.get(User, user_id).workspace_id


def _set(client, admin, workspace_id: int, **limits):
    return client.put(f"/api/v1/admin/quotas/{workspace_id}", headers=bearer(admin["token"]), json=limits)


def _line(body: dict, key: str) -> dict:
    return next(q for q in body["quotas"] if q["key"] == key)


def _cancel_queued(workspace_id: int) -> None:
    """Leave no queued rows behind for the session's worker."""
    with session_scope() as db:
        db.query(Job).filter(Job.workspace_id == workspace_id, Job.status == JobStatus.queued).update(
            {"status": JobStatus.cancelled, "cancel_requested": True}
        )


def test_an_administrator_sets_a_workspace_quota_the_owner_sees_it_and_the_change_is_audited(client, make_user, admin):
    owner = make_user("owner")
    ws = _workspace_of(owner.id)
    response = _set(client, admin, ws, max_queued_jobs=3, gpu_hours_per_month=1.5)
    assert response.status_code == 200, response.text
    assert _line(response.json(), "max_queued_jobs") == {
        "key": "max_queued_jobs", "label": "queued jobs", "limit": 3, "override": 3, "used": 0,
    }  # fmt: skip

    mine = client.get("/api/v1/quotas", headers=bearer(owner.token)).json()
    assert mine["workspace_id"] == ws
    assert _line(mine, "gpu_hours_per_month")["limit"] == 1.5
    assert _line(mine, "max_running_jobs")["limit"] == 0 and _line(mine, "max_running_jobs")["override"] is None  # the default
    # The owner reads the change in their workspace's audit log: who, from where, before and after.
    event = client.get("/api/v1/audit", headers=bearer(owner.token), params={"action": "quota_changed"}).json()["events"][0]
    assert event["user_email"] == admin["email"] and event["target_id"] == str(ws)
    assert event["details"]["before"]["max_queued_jobs"] is None and event["details"]["after"]["max_queued_jobs"] == 3

    # Only administrators set quotas; back to the default with null.
    assert _set(client, {"token": owner.token}, ws, max_queued_jobs=100).status_code == 403
    assert _line(_set(client, admin, ws, max_queued_jobs=None).json(), "max_queued_jobs")["override"] is None


@pytest.mark.parametrize(
    "body",
    [{"max_queued_jobs": -1}, {"gpu_hours_per_month": "lots"}, {"requests_per_minute": 1.5}, {"max_running_jobs": 10**12}],
)
def test_bad_quota_values_are_a_plain_422(client, make_user, admin, body):
    ws = _workspace_of(make_user("owner").id)
    response = _set(client, admin, ws, **body)
    assert response.status_code == 422 and isinstance(response.json()["detail"], str)


def test_an_unknown_workspace_is_404(client, admin):
    assert _set(client, admin, 987654321, max_queued_jobs=1).status_code == 404


def test_a_workspace_over_its_queued_jobs_quota_is_refused_naming_the_limit(client, make_user, admin, tiny_model_dir):
    owner, other = make_user("owner"), make_user("other")
    ws = _workspace_of(owner.id)
    dataset = upload(client, owner.token, SAMPLE_CSV.read_bytes(), "northwind.csv").json()
    assert _set(client, admin, ws, max_queued_jobs=2).status_code == 200
    try:
        for _ in range(2):
            assert client.post("/api/v1/jobs", headers=bearer(owner.token), json={"dataset_id": dataset["id"], **JOB}).status_code == 201
        refused = client.post("/api/v1/jobs", headers=bearer(owner.token), json={"dataset_id": dataset["id"], **JOB})
        assert refused.status_code == 403
        assert refused.json() == {
            "detail": "This workspace's quota of queued jobs is 2, and it has 2 queued. Wait for some to start or cancel some, "
            "or ask an administrator for a larger quota.",
            "limit": "max_queued_jobs",
        }
        # A bake-off that would pass the limit queues none of its jobs.
        bakeoff = client.post(
            "/api/v1/bakeoffs", headers=bearer(owner.token), json={"dataset_id": dataset["id"], **JOB, "techniques": ["lora", "dora"]}
        )
        assert bakeoff.status_code == 403 and "quota of queued jobs is 2" in bakeoff.json()["detail"]
        # The training form: the same sentence on a plain page.
        csrf = sign_in(client, owner.email, owner.password)
        form = {
            "csrf_token": csrf, "dataset_id": str(dataset["id"]), "task": "instruction", "prompt_column": "question",
            "response_column": "answer", "base_model": "tiny-llama", "technique": "lora", "param_max_steps": "1",
        }  # fmt: skip
        page = client.post("/jobs", data=form, follow_redirects=False)
        assert page.status_code == 403 and "quota of queued jobs is 2" in page.text and "Traceback" not in page.text
        with session_scope() as db:
            assert db.query(Job).filter(Job.workspace_id == ws, Job.status == JobStatus.queued).count() == 2
        # The quota is this workspace's: another one still queues.
        other_dataset = upload(client, other.token, SAMPLE_CSV.read_bytes(), "northwind.csv").json()
        assert client.post("/api/v1/jobs", headers=bearer(other.token), json={"dataset_id": other_dataset["id"], **JOB}).status_code == 201
    finally:
        _cancel_queued(ws)
        _cancel_queued(_workspace_of(other.id))


def _attempt(db, workspace_id: int, started: datetime, ended: datetime | None) -> None:
    job = Job(
        workspace_id=workspace_id, name="j", task="instruction", column_mapping={}, base_model="tiny-llama", technique="lora",
        params={}, status=JobStatus.succeeded if ended else JobStatus.running, queue=f"none-{uuid.uuid4().hex[:6]}",
    )  # fmt: skip
    db.add(job)
    db.flush()
    db.add(JobAttempt(job_id=job.id, number=1, worker_name="w", started_at=started, ended_at=ended))
    db.flush()


def test_gpu_hours_are_this_months_running_time_of_the_job_attempts(make_user):
    mine, theirs = _workspace_of(make_user("owner").id), _workspace_of(make_user("other").id)
    now = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)
    with session_scope() as db:
        _attempt(db, mine, datetime(2026, 2, 28, 23, 0, tzinfo=UTC), datetime(2026, 3, 1, 1, 0, tzinfo=UTC))  # 1 h in March
        _attempt(db, mine, datetime(2026, 3, 15, 11, 30, tzinfo=UTC), None)  # still running: 0.5 h so far
        _attempt(db, mine, datetime(2026, 2, 1, 0, 0, tzinfo=UTC), datetime(2026, 2, 2, 0, 0, tzinfo=UTC))  # last month
        _attempt(db, mine, datetime(2026, 3, 16, 0, 0, tzinfo=UTC), None)  # after `now`: nothing yet
        _attempt(db, theirs, datetime(2026, 3, 2, 0, 0, tzinfo=UTC), datetime(2026, 3, 2, 4, 0, tzinfo=UTC))
        hours = quotas.gpu_hours_this_month(db, [mine, theirs], now)
    assert hours == {mine: pytest.approx(1.5), theirs: pytest.approx(4.0)}


def test_a_workspace_that_used_its_gpu_hours_is_refused_new_jobs(make_user, settings):
    ws = _workspace_of(make_user("owner").id)
    with session_scope() as db:
        _attempt(db, ws, quotas.month_start(datetime.now(UTC)), None)  # running since the month began
        quotas.check_new_jobs(db, settings, ws)  # no limit by default
        quotas.set_overrides(db, ws, {"gpu_hours_per_month": "0.0001"}, None)
        with pytest.raises(quotas.QuotaExceeded, match=r"quota of GPU hours per month is 0\.0001, and it has used [\d.]+ this month"):
            quotas.check_new_jobs(db, settings, ws)
        db.rollback()


def test_requests_per_minute_are_counted_on_redis_and_answered_429_with_retry_after(client, make_user, admin):
    owner, other = make_user("owner"), make_user("other")
    ws = _workspace_of(owner.id)
    assert _set(client, admin, ws, requests_per_minute=2).status_code == 200
    body = {"prompt": "Hello", "adapter_ids": [], "include_base": True, "max_new_tokens": 4}
    for _ in range(2):
        assert client.post("/api/v1/playground", headers=bearer(owner.token), json=body).status_code != 429
    refused = client.post("/api/v1/playground", headers=bearer(owner.token), json=body)
    assert refused.status_code == 429 and 1 <= int(refused.headers["Retry-After"]) <= 60
    assert refused.json()["detail"].startswith("This workspace's quota of requests per minute is 2, and it has used them.")
    # The playground form says the same in its answers panel.
    csrf = sign_in(client, owner.email, owner.password)
    page = client.post("/playground", data={"csrf_token": csrf, "prompt": "Hello", "include_base": "on"}, headers={"HX-Request": "true"})
    assert page.status_code == 429 and "quota of requests per minute is 2" in page.text and page.headers["Retry-After"]
    # What serving routes call, and another workspace's own count.
    with session_scope() as db:
        with pytest.raises(quotas.RateLimited):
            quotas.check_request_quota(db, ws)
        quotas.check_request_quota(db, _workspace_of(other.id))
        [usage] = quotas.usage_of(db, quotas.get_settings(), [ws])
        assert usage.used["requests_per_minute"] == 2


def test_the_admin_page_lists_workspaces_and_saves_a_form_and_owners_see_their_usage(client, make_user, admin):
    owner = make_user("owner")
    ws = _workspace_of(owner.id)
    csrf = sign_in(client, admin["email"], admin["password"])
    page = client.get("/admin/quotas")
    assert page.status_code == 200 and f'action="/admin/quotas/{ws}"' in page.text
    form = {"csrf_token": csrf, "max_queued_jobs": "4", "max_running_jobs": "", "gpu_hours_per_month": "2.5", "requests_per_minute": "0"}
    saved = client.post(f"/admin/quotas/{ws}", data=form)
    assert saved.status_code == 200 and "Saved the quotas" in saved.text
    with session_scope() as db:
        assert quotas.overrides(db, ws) == {
            "max_queued_jobs": 4, "max_running_jobs": None, "gpu_hours_per_month": 2.5, "requests_per_minute": 0,
        }  # fmt: skip
    bad = client.post(f"/admin/quotas/{ws}", data={**form, "max_queued_jobs": "many"})
    assert bad.status_code == 422 and "queued jobs: give a number" in bad.text
    without_csrf = client.post(f"/admin/quotas/{ws}", data={k: v for k, v in form.items() if k != "csrf_token"})
    assert without_csrf.status_code == 403

    client.post("/logout", data={"csrf_token": csrf})
    sign_in(client, owner.email, owner.password)
    mine = client.get("/settings/quotas")
    assert mine.status_code == 200 and "GPU hours per month" in mine.text and "2.5" in mine.text
    assert 'name="max_queued_jobs"' not in mine.text  # no form for owners
    assert client.get("/admin/quotas").status_code == 403


def test_a_month_starts_on_the_first_at_midnight_utc():
    assert quotas.month_start(datetime(2026, 3, 1, 0, 30, tzinfo=UTC) + timedelta(hours=-1)) == datetime(2026, 2, 1, tzinfo=UTC)


def test_evaluations_and_exports_on_workers_count_in_the_gpu_hours(make_user, settings):
    """A workflow run is recorded from the worker's start to its finish (the calls worker/evaluation
    and worker/export make) and counted with the job attempts; one that never finished (its worker
    killed) counts for at most the tasks' hard time limit."""
    from app.models import Adapter, WorkflowRun
    from app.services import adapter_workflows

    ws = _workspace_of(make_user("owner").id)
    with session_scope() as db:
        adapter = Adapter(workspace_id=ws, name="a", technique="lora", base_model="tiny-llama", storage_key="nowhere")
        db.add(adapter)
        db.flush()
        adapter_id = adapter.id
    with session_scope() as db:
        assert adapter_workflows.start(db, adapter_id, adapter_workflows.EVALUATION)
        assert not adapter_workflows.start(db, adapter_id, adapter_workflows.EVALUATION)  # a duplicate wake-up: no second run
    with session_scope() as db:
        assert adapter_workflows.finish(db, adapter_id, adapter_workflows.EVALUATION)
        assert adapter_workflows.start(db, adapter_id, adapter_workflows.GGUF_EXPORT)
        assert adapter_workflows.finish(db, adapter_id, adapter_workflows.GGUF_EXPORT, "it broke")
    with session_scope() as db:
        runs = db.query(WorkflowRun).filter(WorkflowRun.adapter_id == adapter_id).order_by(WorkflowRun.id).all()
        assert [(r.workspace_id, r.workflow, r.outcome, r.ended_at is not None) for r in runs] == [
            (ws, "evaluation", "done", True), (ws, "gguf_export", "failed", True),
        ]  # fmt: skip
        assert quotas.gpu_hours_this_month(db, [ws])[ws] > 0

    now = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)
    limit = timedelta(seconds=settings.job_time_limit_seconds + 300)
    with session_scope() as db:
        mine = _workspace_of(make_user("owner").id)
        _attempt(db, mine, datetime(2026, 3, 10, 0, 0, tzinfo=UTC), datetime(2026, 3, 10, 1, 0, tzinfo=UTC))  # training: 1 h
        db.add_all(
            [
                WorkflowRun(workspace_id=mine, adapter_id=adapter_id, workflow="evaluation",
                            started_at=datetime(2026, 3, 10, 2, 0, tzinfo=UTC), ended_at=datetime(2026, 3, 10, 2, 30, tzinfo=UTC)),
                WorkflowRun(workspace_id=mine, adapter_id=None, workflow="merged_export",  # its adapter deleted since
                            started_at=datetime(2026, 2, 28, 23, 45, tzinfo=UTC), ended_at=datetime(2026, 3, 1, 0, 15, tzinfo=UTC)),
                WorkflowRun(workspace_id=mine, adapter_id=None, workflow="gguf_export",  # never finished
                            started_at=datetime(2026, 3, 1, 0, 0, tzinfo=UTC), ended_at=None),
            ]
        )  # fmt: skip
        db.flush()
        hours = quotas.gpu_hours_this_month(db, [mine], now)[mine]
        assert hours == pytest.approx(1 + 0.5 + 0.25 + limit.total_seconds() / 3600)
        db.rollback()
