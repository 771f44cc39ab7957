"""The rated request log: reviewers (viewers and up) give each logged answer a thumbs up or down
(CSRF, their workspace only), and the rated answers become a feedback dataset (prompt, answer,
good/bad) through the normal ingest, recorded in the audit log, ready for a KTO job; with nothing
rated, building one is a plain 409."""

from __future__ import annotations

import uuid

from app.db import session_scope
from app.models import AuditEvent, ServingLogEntry, User
from app.services.accounts import create_api_token, create_user
from tests.app.helpers import bearer
from tests.app.serving_helpers import install_base, make_adapter
from tests.conftest import TINY_MODEL_KEY, sign_in

PASSWORD = "correct horse battery"
ROWS = [("Where is my order?", "On its way, here is the tracking link."), ("Can I return boots?", "No."), ("Gift wrap?", "Yes, 3 euros.")]


def _log(user_id: int, adapter_id: int, rows=ROWS) -> list[int]:
    with session_scope() as db:
        workspace_id = db.get(User, user_id).workspace_id
        entries = [ServingLogEntry(workspace_id=workspace_id, adapter_id=adapter_id, prompt=p, answer=a) for p, a in rows]
        db.add_all(entries)
        db.flush()
        return [e.id for e in entries]


def _viewer_of(owner_id: int) -> tuple[int, str, str]:
    """A viewer in the owner's workspace: (id, email, API token)."""
    email = f"viewer-{uuid.uuid4().hex[:8]}@example.com"
    with session_scope() as db:
        viewer = create_user(db, email, PASSWORD, workspace=db.get(User, owner_id).workspace, role="viewer")
        return viewer.id, email, create_api_token(db, viewer)


def _rating(entry_id: int) -> tuple[bool | None, int | None]:
    with session_scope() as db:
        entry = db.get(ServingLogEntry, entry_id)
        return entry.rating, entry.rated_by_id


def test_viewers_rate_logged_answers_with_csrf_and_only_in_their_workspace(client, make_user):
    install_base()
    owner, other = make_user(), make_user()
    adapter_id, _ = make_adapter(owner.id, name="rated one")
    sibling_id, _ = make_adapter(owner.id, name="rated sibling")
    first, second, _ = _log(owner.id, adapter_id)
    (sibling_entry,) = _log(owner.id, sibling_id, ROWS[:1])
    theirs_adapter, _ = make_adapter(other.id, name="their rated")
    (theirs,) = _log(other.id, theirs_adapter, ROWS[:1])
    viewer_id, viewer_email, viewer_token = _viewer_of(owner.id)
    csrf = sign_in(client, viewer_email, PASSWORD)
    page = client.get(f"/adapters/{adapter_id}").text
    assert f'id="log-entry-{first}"' in page and f"/request-log/{first}/rating" in page and "0 rows" in page

    url = f"/adapters/{adapter_id}/request-log/{first}/rating"
    assert client.post(url, data={"rating": "good"}).status_code == 403  # no CSRF token
    assert _rating(first) == (None, None)
    rated = client.post(url, data={"rating": "good", "csrf_token": csrf}, headers={"HX-Request": "true"})
    assert rated.status_code == 200 and f'id="log-entry-{first}"' in rated.text and 'aria-pressed="true"' in rated.text
    assert _rating(first) == (True, viewer_id)
    assert client.post(url, data={"rating": "none", "csrf_token": csrf}).status_code == 200  # taken back (redirect followed)
    assert _rating(first) == (None, None)
    odd = client.post(url, data={"rating": "meh", "csrf_token": csrf})
    assert odd.status_code == 422 and "good or bad" in odd.text

    for path in (
        f"/adapters/{adapter_id}/request-log/{theirs}/rating",  # another workspace's entry under my adapter
        f"/adapters/{theirs_adapter}/request-log/{theirs}/rating",  # another workspace's adapter
        f"/adapters/{adapter_id}/request-log/{sibling_entry}/rating",  # another adapter's entry
    ):
        assert client.post(path, data={"rating": "bad", "csrf_token": csrf}).status_code == 404, path
    assert _rating(theirs) == (None, None) and _rating(sibling_entry) == (None, None)

    api = f"/api/v1/adapters/{adapter_id}/request-log"
    put = client.put(f"{api}/{second}/rating", headers=bearer(viewer_token), json={"rating": "bad"})
    assert put.status_code == 200 and put.json() == {"id": second, "rating": "bad"}
    assert _rating(second) == (False, viewer_id)
    assert client.put(f"{api}/{theirs}/rating", headers=bearer(viewer_token), json={"rating": "bad"}).status_code == 404
    assert client.put(f"{api}/{second}/rating", headers=bearer(viewer_token), json={"rating": "fine"}).status_code == 422
    listed = {e["id"]: e["rating"] for e in client.get(api, headers=bearer(viewer_token)).json()}
    assert listed[second] == "bad" and listed[first] == "none"


def test_rated_answers_become_a_feedback_dataset_for_kto_and_the_audit_log_says_so(client, make_user, tiny_model_dir):
    install_base()
    owner = make_user()
    adapter_id, slug = make_adapter(owner.id, name="feedback source")
    ids = _log(owner.id, adapter_id, [*ROWS, ("Unrated?", "Left out.")])
    api = f"/api/v1/adapters/{adapter_id}"
    for entry_id, rating in zip(ids, ("good", "bad", "good"), strict=False):
        assert client.put(f"{api}/request-log/{entry_id}/rating", headers=bearer(owner.token), json={"rating": rating}).status_code == 200
    assert client.get(f"{api}/feedback-dataset", headers=bearer(owner.token)).json() == {"good": 2, "bad": 1, "rows": 3}

    csrf = sign_in(client, owner.email, PASSWORD)
    assert "Build a feedback dataset from the rated answers: 3 rows" in client.get(f"/adapters/{adapter_id}").text
    built = client.post(f"/adapters/{adapter_id}/feedback-dataset", data={"csrf_token": csrf})
    assert built.status_code == 200 and built.url.path.startswith("/datasets/") and built.url.query == b"task=feedback"
    dataset_id = int(built.url.path.rsplit("/", 1)[1])

    made = client.post(f"{api}/feedback-dataset", headers=bearer(owner.token))
    assert made.status_code == 201, made.text
    dataset = made.json()
    assert dataset["id"] == dataset_id  # the same rows again: the dataset already made
    assert dataset["row_count"] == 3 and dataset["columns"] == ["prompt", "answer", "feedback"]
    assert dataset["original_filename"] == f"request-log-{slug}-feedback.jsonl"
    rows = client.get(f"/api/v1/datasets/{dataset_id}/rows", headers=bearer(owner.token)).json()["rows"]
    assert [r["cells"] for r in rows] == [
        {"prompt": ROWS[0][0], "answer": ROWS[0][1], "feedback": "good"},
        {"prompt": ROWS[1][0], "answer": ROWS[1][1], "feedback": "bad"},
        {"prompt": ROWS[2][0], "answer": ROWS[2][1], "feedback": "good"},
    ]
    with session_scope() as db:
        events = db.query(AuditEvent).filter_by(user_id=owner.id, action="dataset_uploaded", target_id=str(dataset_id)).all()
        assert len(events) == 2 and all(e.details["source"] == "request_log" and e.details["rows"] == 3 for e in events)

    job = {
        "dataset_id": dataset_id,
        "task": "feedback",
        "column_mapping": {"prompt": "prompt", "answer": "answer", "feedback": "feedback"},
        "base_model": TINY_MODEL_KEY,
        "technique": "lora",
    }
    created = client.post("/api/v1/jobs", headers=bearer(owner.token), json=job)
    assert created.status_code == 201, created.text


def test_building_with_nothing_rated_is_a_plain_409_and_viewers_may_not_build(client, make_user):
    install_base()
    owner = make_user()
    adapter_id, _ = make_adapter(owner.id, name="unrated")
    _log(owner.id, adapter_id)
    refused = client.post(f"/api/v1/adapters/{adapter_id}/feedback-dataset", headers=bearer(owner.token))
    assert refused.status_code == 409 and "No rated answers yet" in refused.json()["detail"]
    csrf = sign_in(client, owner.email, PASSWORD)
    page = client.post(f"/adapters/{adapter_id}/feedback-dataset", data={"csrf_token": csrf})
    assert page.status_code == 409 and "No rated answers yet" in page.text and "Traceback" not in page.text
    _, _, viewer_token = _viewer_of(owner.id)
    assert client.post(f"/api/v1/adapters/{adapter_id}/feedback-dataset", headers=bearer(viewer_token)).status_code == 403
