"""A second evaluation or export of the same adapter is not queued while one is pending — through
the API, with the real broker: the wake-up functions are wrapped to count what they send (and
still send it), the adapter's state columns say what is pending."""

from __future__ import annotations

import pytest

from app import queue
from app.db import session_scope
from app.models import Adapter, Job, User
from tests.app.helpers import bearer

REQUESTS = {
    # route -> (the wake-up it sends, the state field of the answer)
    "evaluate": ("send_evaluate", "evaluation_state"),
    "export": ("send_export", "merged_export_state"),
    "export-gguf": ("send_export_gguf", "gguf_export_state"),
}


@pytest.fixture
def sent(monkeypatch) -> list[tuple[str, int]]:
    messages: list[tuple[str, int]] = []
    for name, _ in REQUESTS.values():
        real = getattr(queue, name)

        def spy(adapter_id, *args, _real=real, _name=name, **kwargs):
            messages.append((_name, adapter_id))
            return _real(adapter_id, *args, **kwargs)

        monkeypatch.setattr(queue, name, spy)
    return messages


def _adapter(user_id: int) -> int:
    with session_scope() as db:
        ws = db.get(User, user_id).workspace_id
        job = Job(
            workspace_id=ws, name="j", task="instruction", column_mapping={}, base_model="tiny-llama", technique="lora",
            params={}, status="succeeded",
        )  # fmt: skip
        db.add(job)
        db.flush()
        adapter = Adapter(workspace_id=ws, job_id=job.id, name="a", technique="lora", base_model="tiny-llama", storage_key="nowhere")
        db.add(adapter)
        db.flush()
        return adapter.id


@pytest.mark.parametrize("route", list(REQUESTS))
def test_a_second_request_while_one_is_pending_queues_nothing(client, make_user, sent, tiny_model_dir, route):
    owner = make_user("owner")
    adapter_id = _adapter(owner.id)
    send_name, state_field = REQUESTS[route]
    answers = [client.post(f"/api/v1/adapters/{adapter_id}/{route}", headers=bearer(owner.token)) for _ in range(3)]
    assert [a.status_code for a in answers] == [202, 202, 202], [a.text for a in answers]
    assert {a.json()[state_field] for a in answers} <= {"queued", "running"}  # a worker may have taken it meanwhile
    assert sent == [(send_name, adapter_id)]  # one wake-up, not three
