"""The engine answers the serving protocol: start, token pieces, done (stop/length), errors."""

from __future__ import annotations

import time

from app.services.serving_protocol import AdapterRef, cancel_key, engines_key, queue_key
from tests.worker.serving.conftest import answer, events, finished, push, run_until


def test_a_request_is_answered_with_start_tokens_and_done(engine_factory, serve_client):
    engine = engine_factory()
    rid = push(serve_client, engine.config.base_model, max_tokens=10)
    run_until(engine, lambda: finished(serve_client, rid))
    got = events(serve_client, rid)
    assert got[0].type == "start" and got[0].prompt_tokens > 0
    text, done = answer(serve_client, rid)
    assert done.type == "done" and done.prompt_tokens == got[0].prompt_tokens
    assert done.finish_reason in ("stop", "length") and 1 <= done.completion_tokens <= 10
    assert text and [e.type for e in got[1:-1]] == ["token"] * (len(got) - 2)
    assert serve_client.zscore(engines_key(engine.config.base_model), engine.config.name) is not None


def test_max_tokens_ends_with_length(engine_factory, serve_client):
    engine = engine_factory()
    engine.eos_ids = set()  # never stop early, so the limit is what ends it
    rid = push(serve_client, engine.config.base_model, max_tokens=5)
    run_until(engine, lambda: finished(serve_client, rid))
    _, done = answer(serve_client, rid)
    assert (done.finish_reason, done.completion_tokens) == ("length", 5)


def test_context_too_long_is_a_400(engine_factory, serve_client):
    engine = engine_factory()
    rid = push(serve_client, engine.config.base_model, prompt="word " * 400, max_tokens=200)
    run_until(engine, lambda: finished(serve_client, rid))
    got = events(serve_client, rid)
    assert len(got) == 1 and (got[0].type, got[0].status, got[0].code) == ("error", 400, "context_length_exceeded")
    assert "maximum context length is 512" in got[0].message


def test_bad_requests_are_answered_and_the_loop_goes_on(engine_factory, serve_client):
    engine = engine_factory()
    key = queue_key(engine.config.base_model)
    serve_client.rpush(key, "{not json")
    serve_client.rpush(key, '{"id": "bad-shape-1", "unexpected": 1}')
    both = push(serve_client, engine.config.base_model, messages=[{"role": "user", "content": "hi"}], prompt="hi")
    hot = push(serve_client, engine.config.base_model, temperature=5.0)
    late = push(serve_client, engine.config.base_model, deadline=time.time() - 1)
    gone = push(serve_client, engine.config.base_model, adapter=AdapterRef(id=99, storage_key="adapters/none-here", version="x"))
    good = push(serve_client, engine.config.base_model)
    run_until(engine, lambda: all(finished(serve_client, r) for r in (both, hot, late, gone, good, "bad-shape-1")))
    assert events(serve_client, "bad-shape-1")[-1].status == 400
    assert events(serve_client, both)[-1].status == 400
    assert events(serve_client, hot)[-1].status == 400
    assert (events(serve_client, late)[-1].status, events(serve_client, late)[-1].code) == (503, "engine_overloaded")
    assert (events(serve_client, gone)[-1].status, events(serve_client, gone)[-1].code) == (404, "model_not_found")
    assert answer(serve_client, good)[1].type == "done"


def test_chat_messages_use_the_prompt_format_of_training(engine_factory, serve_client):
    from worker.training.data import render_prompt

    engine = engine_factory()
    rid = push(serve_client, engine.config.base_model, prompt=None, messages=[{"role": "user", "content": "Where is my parcel?"}])
    run_until(engine, lambda: finished(serve_client, rid))
    expected = len(engine.tokenizer(render_prompt(engine.tokenizer, "Where is my parcel?"))["input_ids"])
    assert events(serve_client, rid)[0].prompt_tokens == expected


def test_cancel_drops_the_request_at_the_next_step(engine_factory, serve_client):
    engine = engine_factory()
    engine.eos_ids = set()
    rid = push(serve_client, engine.config.base_model, max_tokens=200)
    run_until(engine, lambda: len([e for e in events(serve_client, rid) if e.type == "token"]) >= 2)
    serve_client.set(cancel_key(rid), "1", ex=60)
    before = len(events(serve_client, rid))
    engine.iterate()
    engine.iterate()
    assert not engine.running and len(events(serve_client, rid)) <= before + 1
    assert not any(e.type == "done" for e in events(serve_client, rid))
