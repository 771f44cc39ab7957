"""Preference and feedback data in the web process: upload, column guessing, the preview (chosen
and rejected side by side, rows left out counted by reason), refusals in plain words, datasets
built from blind review votes and from playground corrections, the parent adapter checks, and the
comparison page's reward accuracy with its interval and verdict."""

from __future__ import annotations

import json

from app.db import session_scope
from app.models import Adapter, ReviewItem, User
from app.services.column_guess import guess_columns
from tests.app.helpers import bearer, upload
from tests.conftest import TINY_MODEL_KEY, sign_in

PREFERENCE_CSV = (
    b"question,chosen,rejected\n"
    b"Where is my parcel?,It arrives tomorrow; here is the tracking link.,No idea.\n"
    b"Can I return boots?,Yes: within 30 days with the receipt.,Maybe.\n"
    b"Same answers?,Identical text,Identical text\n"
    b"Empty chosen?,,Rejected only\n"
    b"Both empty?,,\n"
    b'Do you ship to Norway?,"Yes, in 3 to 5 days.",We do not know.\n'
    b'Gift wrap?,"Yes, for 3 euros.",\n'
)
MAPPING = {"prompt": "question", "chosen": "chosen", "rejected": "rejected"}


def _job(token, dataset_id, task="preference", mapping=None, **extra):
    body = {"dataset_id": dataset_id, "task": task, "column_mapping": mapping or MAPPING, "base_model": TINY_MODEL_KEY, "technique": "lora"}
    return {"headers": bearer(token), "json": {**body, **extra}}


def test_columns_are_guessed_for_both_kinds():
    assert {k: v for k, v in guess_columns("preference", ["question", "chosen", "rejected"]).items() if v} == MAPPING
    guessed = guess_columns("feedback", ["prompt", "answer", "rating"])
    assert guessed["answer"] == "answer" and guessed["feedback"] == "rating"


def test_bad_pairs_are_counted_in_the_preview_and_the_job_still_starts(client, make_user, tiny_model_dir):
    user = make_user("pref")
    dataset = upload(client, user.token, PREFERENCE_CSV, "pairs.csv").json()
    preview = client.post(
        "/api/v1/jobs/preview",
        headers=bearer(user.token),
        json={"dataset_id": dataset["id"], "task": "preference", "column_mapping": MAPPING, "base_model": TINY_MODEL_KEY},
    )
    assert preview.status_code == 200, preview.text
    body = preview.json()
    assert body["skipped"] == {"chosen and rejected identical": 1, "one-sided (only one answer)": 2, "both answers empty": 1}
    first = body["examples"][0]
    assert first["titles"] == ["Chosen", "Rejected"] and len(first["parts"]) == 2
    chosen_text = "".join(t["text"] for t in first["parts"][0]["tokens"])
    rejected_text = "".join(t["text"] for t in first["parts"][1]["tokens"])
    assert "tracking link" in chosen_text and "No idea." in rejected_text and "Where is my parcel?" in rejected_text
    created = client.post("/api/v1/jobs", **_job(user.token, dataset["id"]))
    assert created.status_code == 201, created.text


def test_feedback_that_is_all_good_is_refused_for_kto_in_plain_words(client, make_user, tiny_model_dir):
    user = make_user("fb")
    csv = b"prompt,answer,rating\n" + b"".join(f"Question {i}?,Answer {i}.,good\n".encode() for i in range(6))
    dataset = upload(client, user.token, csv, "all-good.csv").json()
    mapping = {"prompt": "prompt", "answer": "answer", "feedback": "rating"}
    refused = client.post("/api/v1/jobs", **_job(user.token, dataset["id"], "feedback", mapping))
    assert refused.status_code == 422
    message = refused.json()["detail"]["errors"]["feedback"]
    assert 'Every usable row is marked "good"' in message and "KTO" in message


def test_a_pairs_loss_on_feedback_rows_is_refused(client, make_user, tiny_model_dir):
    user = make_user("fb2")
    csv = b"prompt,answer,rating\n" + b"".join(f"Q{i}?,A{i}.,{'good' if i % 2 else 'bad'}\n".encode() for i in range(6))
    dataset = upload(client, user.token, csv, "mixed.csv").json()
    mapping = {"prompt": "prompt", "answer": "answer", "feedback": "rating"}
    refused = client.post("/api/v1/jobs", **_job(user.token, dataset["id"], "feedback", mapping, params={"preference_loss": "dpo"}))
    assert refused.status_code == 422
    assert "good/bad feedback rows train with KTO" in refused.json()["detail"]["errors"]["preference_loss"]
    assert client.post("/api/v1/jobs", **_job(user.token, dataset["id"], "feedback", mapping)).status_code == 201


def test_preference_tuning_is_offered_on_the_lora_family_only(client, make_user, tiny_model_dir):
    user = make_user("fam")
    dataset = upload(client, user.token, PREFERENCE_CSV, "pairs2.csv").json()
    refused = client.post("/api/v1/jobs", **_job(user.token, dataset["id"], technique="loha"))
    assert refused.status_code == 422 and "does not support" in refused.json()["detail"]["errors"]["technique"]


def _adapter(workspace_id: int, name: str, technique: str = "lora", **metrics) -> int:
    with session_scope() as db:
        adapter = Adapter(
            workspace_id=workspace_id,
            name=name,
            technique=technique,
            base_model=TINY_MODEL_KEY,
            storage_key=f"adapters/{name}",
            metrics=metrics,
        )
        db.add(adapter)
        db.flush()
        return adapter.id


def _workspace(user_id: int) -> int:
    with session_scope() as db:
        return db.get(User, user_id).workspace_id


def test_parent_adapter_must_be_ours_and_continuable(client, make_user, tiny_model_dir):
    user, stranger = make_user("par"), make_user("stranger")
    dataset = upload(client, user.token, PREFERENCE_CSV, "pairs3.csv").json()
    theirs = _adapter(_workspace(stranger.id), "their-adapter")
    assert client.post("/api/v1/jobs", **_job(user.token, dataset["id"], parent_adapter_id=theirs)).status_code == 404
    ia3 = _adapter(_workspace(user.id), "ia3-adapter", technique="ia3")
    refused = client.post("/api/v1/jobs", **_job(user.token, dataset["id"], parent_adapter_id=ia3))
    assert refused.status_code == 422 and "continues LoRA" in refused.json()["detail"]["errors"]["parent_adapter_id"]
    ours = _adapter(_workspace(user.id), "sft-adapter")
    created = client.post("/api/v1/jobs", **_job(user.token, dataset["id"], parent_adapter_id=ours))
    assert created.status_code == 201 and created.json()["parent_adapter_id"] == ours


def _vote(workspace_id: int, prompt: str, left: tuple[str, str], right: tuple[str, str], choice: str) -> None:
    with session_scope() as db:
        db.add(
            ReviewItem(
                token=f"t-{workspace_id}-{prompt}-{choice}",
                workspace_id=workspace_id,
                left_target=left[0],
                right_target=right[0],
                prompt=prompt,
                left_answer=left[1],
                right_answer=right[1],
                choice=choice,
            )
        )


def _made_events(client, token: str, dataset_id: int) -> list[dict]:
    """The audit log's record of a made dataset: where its rows came from and how many."""
    events = client.get("/api/v1/audit", headers=bearer(token), params={"action": "dataset_uploaded"}).json()["events"]
    return [{k: e["details"][k] for k in ("source", "rows")} for e in events if e["target_id"] == str(dataset_id)]


def test_votes_become_a_preference_dataset(client, make_user):
    user = make_user("votes")
    workspace = _workspace(user.id)
    a, b = _adapter(workspace, "votes-a"), _adapter(workspace, "votes-b")
    _vote(workspace, "Where is my parcel?", (f"adapter:{a}", "Tomorrow, tracked."), ("base", "Unknown."), "left")
    _vote(workspace, "Boots?", ("base", "No."), (f"adapter:{a}", "Yes, within 30 days."), "right")
    _vote(workspace, "Norway?", (f"adapter:{a}", "Yes."), ("base", "Yes!"), "tie")
    _vote(workspace, "Gift wrap?", (f"adapter:{b}", "3 euros."), ("base", "Never."), "left")
    counts = client.get(f"/api/v1/preference-datasets/votes?adapter_ids={a}", headers=bearer(user.token)).json()
    assert counts == {"votes": 3, "pairs": 2, "ties": 1, "left_out": 1}
    everything = client.get("/api/v1/preference-datasets/votes", headers=bearer(user.token)).json()
    assert everything["pairs"] == 3
    made = client.post("/api/v1/preference-datasets/votes", headers=bearer(user.token), json={"adapter_ids": [a]})
    assert made.status_code == 201, made.text
    dataset = made.json()
    assert dataset["row_count"] == 2 and {"prompt", "chosen", "rejected"} <= set(dataset["columns"])
    rows = client.get(f"/api/v1/datasets/{dataset['id']}/rows", headers=bearer(user.token)).json()
    text = json.dumps(rows)
    assert "Tomorrow, tracked." in text and "Yes, within 30 days." in text and "Norway?" not in text
    assert _made_events(client, user.token, dataset["id"]) == [{"source": "review_votes", "rows": 2}]  # audited like an upload
    # an adapter of another workspace is not found; a scope without votes is a plain 409
    other = make_user("other")
    assert client.get(f"/api/v1/preference-datasets/votes?adapter_ids={a}", headers=bearer(other.token)).status_code == 404
    empty = client.post("/api/v1/preference-datasets/votes", headers=bearer(other.token), json={})
    assert empty.status_code == 409 and "no pairs yet" in empty.json()["detail"]


def test_corrections_become_a_preference_dataset(client, make_user):
    user = make_user("corr")
    bad = client.post("/api/v1/corrections", headers=bearer(user.token), json={"prompt": "Hi?", "answer": "Hello.", "correction": "  "})
    assert bad.status_code == 422 and "Write the better answer" in bad.json()["detail"]
    assert client.post("/api/v1/preference-datasets/corrections", headers=bearer(user.token)).status_code == 409
    saved = client.post(
        "/api/v1/corrections",
        headers=bearer(user.token),
        json={"prompt": "Where is my parcel?", "answer": "Dunno.", "correction": "It ships today; tracking follows.", "target": "base"},
    )
    assert saved.status_code == 201
    made = client.post("/api/v1/preference-datasets/corrections", headers=bearer(user.token))
    assert made.status_code == 201 and made.json()["row_count"] == 1
    assert _made_events(client, user.token, made.json()["id"]) == [{"source": "corrections", "rows": 1}]
    # the corrections page lists it, signed in
    sign_in(client, user.email, user.password)
    page = client.get("/corrections")
    assert page.status_code == 200 and "It ships today; tracking follows." in page.text and "Dunno." in page.text


def test_the_comparison_shows_reward_accuracy_with_its_interval_and_verdict(client, make_user):
    user = make_user("cmp")
    adapter = _adapter(
        _workspace(user.id),
        "dpo-adapter",
        reward_accuracy=0.9,
        reward_accuracy_low=0.75,
        reward_accuracy_high=1.0,
        reward_margin=2.5,
        reward_margin_low=1.5,
        reward_margin_high=3.5,
        preference_loss="dpo",
        held_out_examples=20,
    )
    sign_in(client, user.email, user.password)
    page = client.get(f"/compare?ids={adapter}")
    assert page.status_code == 200
    assert 'id="reward-accuracy"' in page.text and "90%" in page.text and "[75%, 100%]" in page.text
    assert "After DPO, dpo-adapter rewards the preferred answer on 90% of 20 held-out examples" in page.text
    assert "clearly better than chance" in page.text


def test_a_preference_adapter_compares_with_the_instruction_adapter_it_continued(client, make_user):
    from app.models import Job

    user = make_user("cmp2")
    workspace = _workspace(user.id)
    ids = []
    with session_scope() as db:
        for task in ("instruction", "preference"):
            job = Job(
                workspace_id=workspace, name=task, task=task, column_mapping={}, base_model=TINY_MODEL_KEY, technique="lora", params={}
            )
            db.add(job)
            db.flush()
            adapter = Adapter(
                workspace_id=workspace, job_id=job.id, name=f"{task}-adapter", technique="lora", base_model=TINY_MODEL_KEY, storage_key="x"
            )
            db.add(adapter)
            db.flush()
            ids.append(adapter.id)
    assert client.get(f"/api/v1/compare?ids={ids[0]},{ids[1]}", headers=bearer(user.token)).status_code == 200


def test_every_playground_answer_offers_write_a_better_answer(client, make_user, tiny_model_dir):
    user = make_user("play")
    adapter = _adapter(_workspace(user.id), "play-adapter")
    csrf = sign_in(client, user.email, user.password)
    page = client.post("/playground", data={"prompt": "Where is my parcel?", "include_base": "on", "ids": str(adapter), "csrf_token": csrf})
    assert page.status_code == 200, page.text[:300]
    assert "Write a better answer" in page.text and 'action="/corrections"' in page.text
    assert 'name="prompt" value="Where is my parcel?"' in page.text and 'name="target" value="base"' in page.text
    # the form's post saves a correction (htmx answers with a small confirmation)
    saved = client.post(
        "/corrections",
        data={"prompt": "Where is my parcel?", "answer": "No idea.", "correction": "It ships today.", "target": "base", "csrf_token": csrf},
        headers={"HX-Request": "true"},
    )
    assert saved.status_code == 200 and "Saved as a correction" in saved.text
    same = client.post(
        "/corrections",
        data={"prompt": "Where is my parcel?", "answer": "No idea.", "correction": "No idea.", "target": "base", "csrf_token": csrf},
        headers={"HX-Request": "true"},
    )
    assert same.status_code == 422 and "same as the model" in same.text
