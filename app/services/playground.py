"""The playground: one prompt answered by the base model and several adapters at once.

The web validates the request and stores it in Redis; a worker on the `inference` queue keeps the
base model loaded with the adapters plugged in, and appends each answer's text to a Redis stream
as it is generated; the page reads that stream (server-sent events, asynchronously:
playground_streams). Requests expire after an hour.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app import queue
from app.models import Adapter

TTL_SECONDS = 3600
MAX_ADAPTERS = 6
MAX_NEW_TOKENS = 512


class PlaygroundError(ValueError):
    """A playground request that cannot run, worded for the person who made it."""


@dataclass(frozen=True)
class PlaygroundRequest:
    id: str
    workspace_id: int
    base_model: str
    prompt: str
    adapter_ids: list[int]
    include_base: bool
    max_new_tokens: int
    temperature: float

    @property
    def targets(self) -> list[str]:
        return (["base"] if self.include_base else []) + [f"adapter:{i}" for i in self.adapter_ids]


def request_key(request_id: str) -> str:
    return f"tailor:playground:{request_id}"


def stream_key(request_id: str) -> str:
    return f"tailor:playground:{request_id}:stream"


def create_request(
    db: Session,
    workspace_id: int,
    *,
    prompt: str,
    adapter_ids: list[int],
    include_base: bool = True,
    max_new_tokens: int = 128,
    temperature: float = 0.0,
) -> PlaygroundRequest:
    prompt = prompt.strip()
    if not prompt:
        raise PlaygroundError("Type a prompt first.")
    if len(prompt) > 8000:
        raise PlaygroundError("The prompt is longer than 8,000 characters; shorten it.")
    adapter_ids = list(dict.fromkeys(adapter_ids))
    if not adapter_ids:
        raise PlaygroundError("Pick at least one adapter to try.")
    if len(adapter_ids) > MAX_ADAPTERS:
        raise PlaygroundError(f"Try at most {MAX_ADAPTERS} adapters at once.")
    if not 1 <= max_new_tokens <= MAX_NEW_TOKENS:
        raise PlaygroundError(f"Maximum new tokens must be between 1 and {MAX_NEW_TOKENS}.")
    if not 0.0 <= temperature <= 2.0:
        raise PlaygroundError("Temperature must be between 0 (always the likeliest words) and 2.")
    adapters = list(db.scalars(select(Adapter).where(Adapter.id.in_(adapter_ids), Adapter.workspace_id == workspace_id)))
    if len(adapters) != len(adapter_ids):
        raise PlaygroundError("One of the chosen adapters is not in your workspace.")
    base_models = {a.base_model for a in adapters}
    if len(base_models) > 1:
        raise PlaygroundError("The chosen adapters belong to different base models; try adapters of one base model at a time.")
    request = PlaygroundRequest(
        id=uuid.uuid4().hex,
        workspace_id=workspace_id,
        base_model=base_models.pop(),
        prompt=prompt,
        adapter_ids=adapter_ids,
        include_base=include_base,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
    )
    client = queue.redis_client()
    client.set(request_key(request.id), json.dumps(request.__dict__), ex=TTL_SECONDS)
    queue.send_generate(request.id)
    return request


def load_request(request_id: str, workspace_id: int | None = None) -> PlaygroundRequest | None:
    """The stored request, or None when unknown, expired or (with workspace_id) someone else's."""
    if not request_id.isalnum():
        return None
    raw = queue.redis_client().get(request_key(request_id))
    if raw is None:
        return None
    request = PlaygroundRequest(**json.loads(raw))
    if workspace_id is not None and request.workspace_id != workspace_id:
        return None
    return request


def read_events(request_id: str, after: str = "0", count: int = 200) -> list[tuple[str, dict[str, Any]]]:
    """Events after the given stream id, without waiting: {'target', 'text'} pieces,
    {'target', 'done'} and {'finished'} or {'error'}. (The page's live stream waits for them
    without a thread: playground_streams.)"""
    entries = queue.redis_client().xread({stream_key(request_id): after}, count=count)
    return [(event_id, fields) for _, items in entries for event_id, fields in items]


def collected_answers(request_id: str) -> dict[str, Any]:
    """Everything generated so far, joined per target (the JSON view)."""
    answers: dict[str, str] = {}
    done: set[str] = set()
    finished, error = False, None
    for _, event in read_events(request_id, count=100_000):
        if "text" in event:
            answers[event["target"]] = answers.get(event["target"], "") + event["text"]
        if event.get("done"):
            done.add(event["target"])
        if event.get("finished"):
            finished = True
        if event.get("error"):
            error, finished = event["error"], True
    return {"answers": answers, "done": sorted(done), "finished": finished, "error": error}
