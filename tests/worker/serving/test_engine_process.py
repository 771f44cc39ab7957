"""A real `tailor engine` process against the test Redis and the tiny Llama: it beats, answers a
pushed request end to end, and on SIGTERM stops and takes its heartbeat away."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from app.services.serving_protocol import engines_key
from tests.conftest import ROOT, TINY_MODEL_KEY, _subprocess_env, _wait_for, harness
from tests.worker.serving.conftest import answer, finished, push


def test_tailor_engine_answers_and_its_heartbeat_goes_when_stopped(tiny_model_dir, serve_client):
    name = f"test-engine-proc-{os.getpid()}"
    log = harness().data_dir / "engine.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "engine", "--base-model", TINY_MODEL_KEY, "--name", name],
            cwd=ROOT,
            env=_subprocess_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        beating = lambda: serve_client.zscore(engines_key(TINY_MODEL_KEY), name) is not None  # noqa: E731
        _wait_for(beating, 90, "The serving engine", proc, log)
        first = serve_client.zscore(engines_key(TINY_MODEL_KEY), name)
        rid = push(serve_client, TINY_MODEL_KEY, max_tokens=8)
        _wait_for(lambda: finished(serve_client, rid), 60, "The answer", proc, log)
        text, done = answer(serve_client, rid)
        assert done.type == "done" and done.completion_tokens >= 1 and text
        # It keeps beating (every HEARTBEAT_SECONDS; the answer may come sooner than the next beat).
        _wait_for(lambda: serve_client.zscore(engines_key(TINY_MODEL_KEY), name) > first, 10, "The next heartbeat", proc, log)

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert serve_client.zscore(engines_key(TINY_MODEL_KEY), name) is None
        assert "stopped" in log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
