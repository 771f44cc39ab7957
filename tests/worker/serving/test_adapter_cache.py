"""The adapter LRU: count and memory budget, reload on a new version, and a cold adapter read in
the background while hot requests keep decoding."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import worker.serving.adapters as adapters_module
from tests.worker.serving.conftest import answer, events, finished, push, run_until


def _serve(engine, client, adapter, prompt="Hello", max_tokens=8) -> str:
    rid = push(client, engine.config.base_model, adapter=adapter, prompt=prompt, max_tokens=max_tokens)
    run_until(engine, lambda: finished(client, rid))
    text, done = answer(client, rid)
    assert done.type == "done", done
    return text


def test_least_recently_used_adapters_are_evicted_past_the_count(engine_factory, make_lora, serve_client):
    engine = engine_factory(max_adapters=2)
    a, b, c = make_lora(scale=3.0), make_lora(scale=3.0), make_lora(scale=3.0)
    first_a = _serve(engine, serve_client, a)
    _serve(engine, serve_client, b)
    _serve(engine, serve_client, a)  # a is now the most recently used
    _serve(engine, serve_client, c)
    names = set(engine.model.peft_config)
    assert names == {adapters_module.adapter_name(a), adapters_module.adapter_name(c)}
    assert _serve(engine, serve_client, b) and len(engine.model.peft_config) == 2
    assert _serve(engine, serve_client, a) == first_a  # reloaded after eviction, same answer


def test_the_memory_budget_keeps_only_what_fits(engine_factory, make_lora, serve_client):
    a, b = make_lora(), make_lora()
    engine = engine_factory()
    _serve(engine, serve_client, a)
    one = engine.adapters.loaded[adapters_module.adapter_name(a)].nbytes
    engine.adapters.memory_bytes = one + one // 2
    _serve(engine, serve_client, b)
    assert list(engine.model.peft_config) == [adapters_module.adapter_name(b)]


def test_a_new_version_is_loaded_and_the_old_one_dropped(engine_factory, make_lora, serve_client):
    engine = engine_factory()
    old, other_files = make_lora(scale=3.0), make_lora(scale=3.0)
    old_text = _serve(engine, serve_client, old, prompt=PROMPT)
    new = replace(other_files, id=old.id, version="v2")  # same adapter id, new files and version
    new_text = _serve(engine, serve_client, new, prompt=PROMPT)
    assert new_text != old_text
    assert list(engine.model.peft_config) == [adapters_module.adapter_name(new)]


PROMPT = "The customer asked about the parcel"


def test_a_cold_adapter_loads_without_stalling_hot_requests(engine_factory, make_lora, serve_client, monkeypatch):
    hot, cold = make_lora(), make_lora()
    engine = engine_factory()
    engine.eos_ids = set()
    _serve(engine, serve_client, hot)  # hot: loaded
    release = threading.Event()
    real_read = adapters_module.read_adapter

    def slow_read(ref):  # the cold adapter's files take a while to arrive (a bucket download)
        if ref.id == cold.id:
            assert release.wait(60)
        return real_read(ref)

    monkeypatch.setattr(adapters_module, "read_adapter", slow_read)
    running = push(serve_client, engine.config.base_model, adapter=hot, max_tokens=200)
    run_until(engine, lambda: any(e.type == "token" for e in events(serve_client, running)))
    waiting = push(serve_client, engine.config.base_model, adapter=cold, max_tokens=5)
    tokens_before = len(events(serve_client, running))
    started = time.monotonic()
    for _ in range(15):
        engine.iterate()
    assert len(events(serve_client, running)) >= tokens_before + 10  # the hot request kept decoding
    assert events(serve_client, waiting) == [] and engine.adapters.reading  # the cold one is still being read
    release.set()
    run_until(engine, lambda: finished(serve_client, waiting))
    assert answer(serve_client, waiting)[1].type == "done"
    assert not finished(serve_client, running)
    assert time.monotonic() - started < 60
