"""The contract between the web's /v1 routes and the serving engine (`tailor engine`), over Redis.

Torch-free and database-free: the web imports it to send requests and read answers, the engine to
take requests and write answers. Nothing else travels between them.

- A request is a JSON object pushed (RPUSH) onto the list `queue_key(base_model)`; an engine serving
  that base model pops it (the engine for each base model is one process; several may share a list).
- The engine answers on the Redis stream `events_key(request_id)` with events (`ServeEvent`): one
  `start` (the prompt's token count), `token` pieces of text as they are decoded, and one final
  `done` (finish reason and token counts) or `error` (an HTTP status, an OpenAI error code and a
  plain message). The stream expires `EVENTS_TTL_SECONDS` after the last event.
- The web sets `cancel_key(request_id)` when its client goes away; the engine drops the request at
  its next decode step.
- Each engine writes a heartbeat into the sorted set `engines_key(base_model)` (member: engine name,
  score: unix time) every `HEARTBEAT_SECONDS`; the web answers 503 when no engine for the base
  model beat within `ENGINE_STALE_SECONDS`.
- A request not taken before its `deadline` (unix time) is answered with a 503 by the engine that
  finally pops it, never decoded.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

PREFIX = "tailor:serve"
EVENTS_TTL_SECONDS = 600
HEARTBEAT_SECONDS = 1.0
ENGINE_STALE_SECONDS = 5.0

EventType = Literal["start", "token", "done", "error"]


def queue_key(base_model: str) -> str:
    return f"{PREFIX}:queue:{base_model}"


def events_key(request_id: str) -> str:
    return f"{PREFIX}:events:{request_id}"


def cancel_key(request_id: str) -> str:
    return f"{PREFIX}:cancel:{request_id}"


def engines_key(base_model: str) -> str:
    return f"{PREFIX}:engines:{base_model}"


@dataclass(frozen=True)
class AdapterRef:
    """Which adapter to plug in: its id (the engine's cache key), where its files are in the artifact
    store, and a version that changes when the files do (the engine reloads on a new version)."""

    id: int
    storage_key: str
    version: str = ""


@dataclass(frozen=True)
class ServeRequest:
    id: str
    base_model: str  # the catalogue key (app.base_models)
    adapter: AdapterRef | None  # None: the base model alone
    # Exactly one of messages (chat: rendered with the base model's chat template) or prompt (plain text).
    messages: list[dict[str, str]] | None = None
    prompt: str | None = None
    max_tokens: int = 128
    temperature: float = 1.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    deadline: float = 0.0  # unix time; 0 = none

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: str | bytes) -> ServeRequest:
        data = json.loads(raw)
        adapter = data.pop("adapter")
        return cls(adapter=AdapterRef(**adapter) if adapter else None, **data)


@dataclass(frozen=True)
class ServeEvent:
    type: EventType
    text: str = ""  # token: the new text piece
    prompt_tokens: int = 0  # start, done
    completion_tokens: int = 0  # done
    finish_reason: str = ""  # done: "stop" (end of sequence or a stop string) or "length"
    status: int = 0  # error: the HTTP status the web answers with (400, 404, 503, 500)
    code: str = ""  # error: OpenAI's error code, e.g. "context_length_exceeded"
    message: str = ""  # error: a plain sentence for the caller

    def to_fields(self) -> dict[str, str]:
        """As Redis stream fields (strings only; empty fields left out)."""
        return {k: str(v) for k, v in asdict(self).items() if v not in ("", 0)}

    @classmethod
    def from_fields(cls, fields: dict[str, Any]) -> ServeEvent:
        fields = {(k.decode() if isinstance(k, bytes) else k): v for k, v in fields.items()}

        def text(name: str) -> str:
            value = fields.get(name, "")
            return value.decode() if isinstance(value, bytes) else str(value)

        return cls(
            type=text("type"),  # type: ignore[arg-type]
            text=text("text"),
            prompt_tokens=int(text("prompt_tokens") or 0),
            completion_tokens=int(text("completion_tokens") or 0),
            finish_reason=text("finish_reason"),
            status=int(text("status") or 0),
            code=text("code"),
            message=text("message"),
        )
