"""A failing step answers its requests with errors and serving goes on; stopping finishes or fails
what runs, gives back what was not started, and takes the heartbeat away."""

from __future__ import annotations

from app.services.serving_protocol import engines_key, queue_key
from tests.worker.serving.conftest import answer, events, finished, push, run_until
from worker.serving.batch import RunningBatch


def test_a_crashing_step_fails_its_requests_and_the_engine_serves_on(engine_factory, serve_client, monkeypatch):
    engine = engine_factory()
    engine.eos_ids = set()
    rid = push(serve_client, engine.config.base_model, max_tokens=50)
    run_until(engine, lambda: any(e.type == "token" for e in events(serve_client, rid)))
    real_step = RunningBatch.step

    def broken(self, tokens):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(RunningBatch, "step", broken)
    assert engine.tick() is False
    last = events(serve_client, rid)[-1]
    assert (last.type, last.status, last.code) == ("error", 500, "engine_error")
    monkeypatch.setattr(RunningBatch, "step", real_step)
    after = push(serve_client, engine.config.base_model, max_tokens=5)
    run_until(engine, lambda: finished(serve_client, after))
    assert answer(serve_client, after)[1].type == "done"


def test_stopping_fails_running_requests_requeues_waiting_ones_and_removes_the_heartbeat(engine_factory, serve_client):
    engine = engine_factory(max_batch=1, stop_grace_seconds=0.0)
    engine.eos_ids = set()
    running = push(serve_client, engine.config.base_model, max_tokens=500)
    run_until(engine, lambda: any(e.type == "token" for e in events(serve_client, running)))
    waiting = push(serve_client, engine.config.base_model, max_tokens=5)
    engine.config.max_batch = 2  # let it be taken, but keep it from the batch: the batch is full
    engine.intake()
    engine.config.max_batch = 1
    assert [job.id for job in engine.pending] == [waiting]
    engine.request_stop()
    engine.run()
    last = events(serve_client, running)[-1]
    assert (last.type, last.status) == ("error", 503)
    assert events(serve_client, waiting) == []
    assert waiting in serve_client.lrange(queue_key(engine.config.base_model), 0, -1)[0]
    assert serve_client.zscore(engines_key(engine.config.base_model), engine.config.name) is None


def test_stopping_with_a_grace_period_finishes_running_requests(engine_factory, serve_client):
    engine = engine_factory(stop_grace_seconds=60.0)
    engine.eos_ids = set()
    rid = push(serve_client, engine.config.base_model, max_tokens=30)
    run_until(engine, lambda: any(e.type == "token" for e in events(serve_client, rid)))
    engine.request_stop()
    engine.run()
    _, done = answer(serve_client, rid)
    assert (done.type, done.completion_tokens) == ("done", 30)


def test_the_heartbeat_goes_on_during_a_long_step_and_stops_when_the_loop_is_stuck(engine_factory, serve_client):
    import time

    engine = engine_factory(progress_timeout_seconds=3.0)
    key = engines_key(engine.config.base_model)
    engine.iterate()
    first = serve_client.zscore(key, engine.config.name)
    time.sleep(2.0)  # a long step: no iteration, but the loop is not stuck yet
    during = serve_client.zscore(key, engine.config.name)
    assert during > first
    time.sleep(3.5)  # now stuck past the timeout: the beats stop, the web will see a stale engine
    stale = serve_client.zscore(key, engine.config.name)
    assert time.time() - stale > 1.5
    engine.iterate()
    time.sleep(1.2)
    assert serve_client.zscore(key, engine.config.name) > stale
