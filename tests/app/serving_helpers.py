"""For the /v1 tests: a base model folder the catalogue offers (a config only: nothing loads it), an
approved adapter on it, and a scripted engine that answers the serving protocol over the real Redis.

The scripted engine is the other side of app/services/serving_protocol.py reduced to fixed answers,
so the web side's formats, limits and errors are tested fast; the real engine (`tailor engine`) is
tested against the same routes in tests/e2e/test_serving_openai.py."""

from __future__ import annotations

import json
import threading
import time
from contextlib import contextmanager

from app.config import get_settings
from app.db import session_scope
from app.models import Adapter
from app.queue import redis_client
from app.services import serving
from app.services import serving_protocol as protocol

SERVE_BASE = "serve-test-base"
LLAMA_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "num_key_value_heads": 4,
    "vocab_size": 256,
    "max_position_embeddings": 128,
}


def install_base(key: str = SERVE_BASE) -> str:
    folder = get_settings().models_dir / key
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(LLAMA_CONFIG))
    return key


def make_adapter(
    user_id: int, name: str = "northwind_support · LoRA", status: str = "approved", base: str = SERVE_BASE, **extra
) -> tuple[int, str]:
    """An adapter row of the user's workspace with its model name; returns (id, slug)."""
    from app.models import User

    with session_scope() as db:
        user = db.get(User, user_id)
        assert user is not None
        adapter = Adapter(
            workspace_id=user.workspace_id,
            name=name,
            technique="lora",
            base_model=base,
            storage_key=f"adapters/test-{name}",
            status=status,
            **extra,
        )
        db.add(adapter)
        db.flush()
        slug = serving.assign_slug(db, adapter)
        return adapter.id, slug


def answer_for(request: protocol.ServeRequest) -> list[protocol.ServeEvent]:
    """Fixed answers: 'TOO LONG' in the prompt → a context error; 'SLOW' → tokens 0.2 s apart; 'HOLD' →
    one token and then nothing (the answer stays open until the web side gives up or cancels); else 'Hello world'."""
    text = json.dumps(request.messages) if request.messages is not None else (request.prompt or "")
    if "TOO LONG" in text:
        return [
            protocol.ServeEvent(
                type="error", status=400, code="context_length_exceeded", message="The prompt is longer than the model's context."
            )
        ]
    if "HOLD" in text:
        return [protocol.ServeEvent(type="start", prompt_tokens=3), protocol.ServeEvent(type="token", text="Hel")]
    pieces = ["Hel", "lo", " world"] if "SLOW" not in text else [f" w{i}" for i in range(10)]
    pieces = pieces[: request.max_tokens]
    events = [protocol.ServeEvent(type="start", prompt_tokens=3)]
    events += [protocol.ServeEvent(type="token", text=p) for p in pieces]
    finish = "length" if len(pieces) == request.max_tokens else "stop"
    return [*events, protocol.ServeEvent(type="done", prompt_tokens=3, completion_tokens=len(pieces), finish_reason=finish)]


@contextmanager
def scripted_engine(base: str = SERVE_BASE):
    """A thread beating the heartbeat and answering requests for `base`; yields the requests it took."""
    client = redis_client()
    taken: list[protocol.ServeRequest] = []
    stop = threading.Event()

    def loop():
        while not stop.is_set():
            client.zadd(protocol.engines_key(base), {"scripted": time.time()})
            popped = client.blpop([protocol.queue_key(base)], timeout=0.2)
            if not popped:
                continue
            request = protocol.ServeRequest.from_json(popped[1])
            taken.append(request)
            slow = "SLOW" in json.dumps(request.messages or request.prompt)
            for event in answer_for(request):
                if client.get(protocol.cancel_key(request.id)):
                    break
                client.xadd(protocol.events_key(request.id), event.to_fields())
                if slow and event.type == "token":
                    time.sleep(0.2)
            client.expire(protocol.events_key(request.id), protocol.EVENTS_TTL_SECONDS)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        time.sleep(0.1)
        yield taken
    finally:
        stop.set()
        thread.join(timeout=5)
        client.zrem(protocol.engines_key(base), "scripted")
