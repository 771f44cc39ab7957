"""Blind review round trip: votes are recorded, identities never reach the reviewer's page."""

from __future__ import annotations

import json
import re

from app.db import session_scope
from app.models import Adapter, ReviewItem, User
from app.services.accounts import create_user
from app.services.artifacts import get_artifact_store
from app.services.evaluations import evaluation_key
from tests.app.helpers import bearer
from tests.conftest import sign_in

PROMPTS = ["Where is my parcel?", "Can I return boots?", "Do you ship to Norway?"]


def _evaluated_adapter(workspace_id: int, name: str, answers: list[str]) -> int:
    store = get_artifact_store()
    with session_scope() as db:
        adapter = Adapter(workspace_id=workspace_id, name=name, technique="lora", base_model="tiny-llama", storage_key=f"adapters/{name}")
        db.add(adapter)
        db.flush()
        adapter_id = adapter.id
    rows = [{"prompt": p, "reference": "ref", "base": f"base answer {i}", "adapter": a} for i, (p, a) in enumerate(zip(PROMPTS, answers))]
    tmp = store.temp_path(".json")
    tmp.write_text(json.dumps({"summary": {"rows": 3, "adapter": {}, "base": {}}, "rows": rows, "scores": {"adapter": {}, "base": {}}}))
    store.put_file(evaluation_key(adapter_id), tmp)
    return adapter_id


def test_blind_review_round_trip(client, make_user):
    owner_id, email, password, token = make_user("reviewer")
    with session_scope() as db:
        owner = db.get(User, owner_id)
        workspace_id = owner.workspace_id
        colleague = create_user(db, f"colleague-{owner_id}@example.com", "another long password", workspace=owner.workspace)
        colleague_email = colleague.email
    first = _evaluated_adapter(workspace_id, "SecretNameAlpha", ["alpha 0", "alpha 1", "alpha 2"])
    second = _evaluated_adapter(workspace_id, "SecretNameBeta", ["beta 0", "beta 1", "beta 2"])
    ids = f"{first},{second}"

    sign_in(client, email, password)
    votes = 0
    for _ in range(6):
        page = client.get(f"/review?ids={ids}")
        assert page.status_code == 200
        for secret in ("SecretNameAlpha", "SecretNameBeta", "adapter:", f"/adapters/{first}", f"/adapters/{second}"):
            assert secret not in page.text
        left = re.search(r'id="answer-left">([^<]*)<', page.text).group(1)
        right = re.search(r'id="answer-right">([^<]*)<', page.text).group(1)
        assert left != right and {left.split()[0], right.split()[0]} <= {"alpha", "beta", "base"}
        review_token = re.search(r'action="/review/([^"]+)"', page.text).group(1)
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        choice = "left" if left.startswith("alpha") else ("right" if right.startswith("alpha") else "tie")
        assert client.post(f"/review/{review_token}", data={"choice": choice, "ids": ids, "csrf_token": csrf}).status_code == 200
        votes += 1
        again = client.post(f"/review/{review_token}", data={"choice": "left", "ids": ids, "csrf_token": csrf})
        assert again.status_code == 409  # one vote per pair

    # The API hands out the same kind of anonymous pair to a colleague of the same workspace.
    client.post("/logout", data={"csrf_token": csrf})
    sign_in(client, colleague_email, "another long password")
    pair = client.get(f"/api/v1/review/next?ids={ids}").json()
    assert set(pair) == {"token", "prompt", "left", "right"}
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/datasets/new").text).group(1)
    assert client.post(f"/api/v1/review/{pair['token']}", json={"choice": "tie"}, headers={"X-CSRF-Token": csrf}).status_code == 200
    votes += 1

    with session_scope() as db:
        voted = db.query(ReviewItem).filter(ReviewItem.workspace_id == workspace_id, ReviewItem.choice.is_not(None)).all()
        expected: dict[tuple[str, str], list[int]] = {}
        for item in voted:
            for me, other, side in ((item.left_target, item.right_target, "left"), (item.right_target, item.left_target, "right")):
                if me.startswith("adapter:"):
                    record = expected.setdefault((me, other), [0, 0, 0])
                    record[0 if item.choice == side else 1 if item.choice == "tie" else 2] += 1
    assert len(voted) == votes
    results = client.get(f"/api/v1/compare?ids={ids}", headers=bearer(token)).json()["blind_review"]
    assert {(w["target"], w["opponent"]): [w["wins"], w["ties"], w["losses"]] for w in results} == expected
    for w in results:
        assert w["low"] <= w["rate"] <= w["high"]
    # Whenever alpha's answer was on screen the reviewer picked it (the colleague voted a tie): alpha never lost.
    assert all(w["losses"] == 0 for w in results if w["name"] == "SecretNameAlpha")

    _, _, _, stranger = make_user("outsider")
    assert client.post(f"/api/v1/review/{pair['token']}", json={"choice": "left"}, headers=bearer(stranger)).status_code == 404
