"""Serving-engine fixtures: the tiny Llama, random LoRA adapters in the artifact store, an engine
driven step by step in the test process, and helpers to push requests and read their events."""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Callable

import pytest

from app.services.serving_protocol import AdapterRef, ServeEvent, ServeRequest, events_key, queue_key

_adapter_seeds = itertools.count(1)


@pytest.fixture(scope="session")
def serve_client():
    from app.queue import redis_client

    return redis_client()


@pytest.fixture(scope="session")
def make_lora(tiny_model_dir) -> Callable[..., AdapterRef]:
    """A LoRA adapter with random (non-zero) weights on the tiny Llama, saved where the artifact
    store finds it; returns its AdapterRef."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from app.services.artifacts import get_artifact_store

    def make(r: int = 8, target_modules: tuple[str, ...] = ("q_proj", "v_proj"), scale: float = 1.0) -> AdapterRef:
        seed = next(_adapter_seeds)
        torch.manual_seed(seed)
        base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
        config = LoraConfig(r=r, lora_alpha=2 * r, target_modules=list(target_modules), init_lora_weights=False)
        model = get_peft_model(base, config)
        if scale != 1.0:
            with torch.no_grad():
                for name, param in model.named_parameters():
                    if "lora_B" in name:
                        param.mul_(scale)
        key = f"serve-tests/adapter-{seed}-{uuid.uuid4().hex[:6]}"
        folder = get_artifact_store().path(key)
        model.save_pretrained(str(folder), safe_serialization=True)
        return AdapterRef(id=1000 + seed, storage_key=key, version="v1")

    return make


@pytest.fixture(scope="session")
def make_adapter(tiny_model_dir) -> Callable[..., AdapterRef]:
    """Any PEFT config on the tiny Llama (e.g. IA3, prompt tuning), saved in the artifact store."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from app.services.artifacts import get_artifact_store

    def make(config) -> AdapterRef:
        seed = next(_adapter_seeds)
        torch.manual_seed(seed)
        base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
        model = get_peft_model(base, config)
        with torch.no_grad():  # move the adapter away from its identity initialisation
            for param in model.parameters():
                if param.requires_grad:
                    param.add_(torch.randn_like(param) * 0.5)
        key = f"serve-tests/adapter-{seed}-{uuid.uuid4().hex[:6]}"
        model.save_pretrained(str(get_artifact_store().path(key)), safe_serialization=True)
        return AdapterRef(id=1000 + seed, storage_key=key, version="v1")

    return make


@pytest.fixture
def engine_factory(tiny_model_dir, serve_client):
    """Build an in-process Engine on a fresh copy of the tiny Llama with a queue of its own."""
    from worker.serving.engine import Engine, EngineConfig
    from worker.training.loading import load_base_model

    made = []

    def make(**overrides) -> Engine:
        model, tokenizer = load_base_model(tiny_model_dir, dtype=__import__("torch").float32)
        config = EngineConfig(base_model=f"tiny-{uuid.uuid4().hex[:8]}", name=f"test-engine-{uuid.uuid4().hex[:6]}")
        for key, value in overrides.items():
            setattr(config, key, value)
        torch = __import__("torch")
        engine = Engine(
            config, model, tokenizer, serve_client, load_base=lambda: load_base_model(tiny_model_dir, dtype=torch.float32)[0].eval()
        )
        made.append(engine)
        return engine

    yield make
    for engine in made:
        engine.heart_stop.set()
        if engine.solo is not None:
            engine.solo.stop()
        engine.adapters.shutdown()


def push(client, base_model: str, *, adapter: AdapterRef | None = None, **fields) -> str:
    request_id = uuid.uuid4().hex
    fields.setdefault("prompt", "The customer asked about the parcel")
    fields.setdefault("temperature", 0.0)
    fields.setdefault("max_tokens", 12)
    client.rpush(queue_key(base_model), ServeRequest(id=request_id, base_model=base_model, adapter=adapter, **fields).to_json())
    return request_id


def events(client, request_id: str) -> list[ServeEvent]:
    return [ServeEvent.from_fields(fields) for _, fields in client.xrange(events_key(request_id))]


def finished(client, request_id: str) -> bool:
    return any(e.type in ("done", "error") for e in events(client, request_id))


def run_until(engine, predicate: Callable[[], bool], max_iterations: int = 500, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    for _ in range(max_iterations):
        if predicate():
            return
        engine.iterate()
        if time.monotonic() > deadline:
            break
    assert predicate(), "the engine did not get there"


def answer(client, request_id: str) -> tuple[str, ServeEvent]:
    """The streamed text and the final event."""
    got = events(client, request_id)
    assert got and got[-1].type in ("done", "error"), got
    return "".join(e.text for e in got if e.type == "token"), got[-1]
