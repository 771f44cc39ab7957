"""Workers and engines run on jemalloc where the machine has it (app/worker_environment.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.worker_environment import allocator_preload, find_jemalloc, preloaded_allocator

LIB = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"


def test_auto_preloads_jemalloc_once_and_keeps_what_was_preloaded():
    assert allocator_preload("auto", {}, LIB) == LIB
    assert allocator_preload("auto", {"LD_PRELOAD": "/opt/libfoo.so"}, LIB) == f"{LIB} /opt/libfoo.so"
    assert allocator_preload("auto", {"LD_PRELOAD": LIB}, LIB) is None  # the restarted process goes on
    assert allocator_preload("jemalloc", {}, LIB) == LIB


def test_without_jemalloc_auto_goes_on_and_jemalloc_refuses_plainly():
    assert allocator_preload("auto", {}, None) is None
    assert allocator_preload("system", {}, LIB) is None
    with pytest.raises(SystemExit, match="apt install libjemalloc2"):
        allocator_preload("jemalloc", {}, None)
    with pytest.raises(SystemExit, match="auto, jemalloc, system"):
        allocator_preload("tcmalloc", {}, LIB)


def test_the_library_is_found_where_debian_puts_it():
    assert find_jemalloc(lambda path: path == LIB) == LIB


def test_a_process_reports_the_allocator_it_has_mapped(tmp_path):
    maps = tmp_path / "maps"
    maps.write_text(f"7f00-7f01 r-xp 0 08:01 1 {LIB}\n")
    assert preloaded_allocator(maps) == "jemalloc"
    maps.write_text("7f00-7f01 r-xp 0 08:01 1 /usr/lib/x86_64-linux-gnu/libc.so.6\n")
    assert preloaded_allocator(maps) == "system"
    assert preloaded_allocator(tmp_path / "missing") == "system"


@pytest.mark.skipif(find_jemalloc() is None, reason="this machine has no libjemalloc.so.2")
def test_tailor_engine_restarts_itself_on_jemalloc():
    """A real `tailor engine` (for an unknown base model: after the restart it stops with its plain
    message) runs on jemalloc; with TAILOR_WORKER_ALLOCATOR=system on glibc's malloc."""
    root = Path(__file__).resolve().parents[2]
    for choice, expected in (("auto", "jemalloc"), ("system", "system")):
        env = {**os.environ, "TAILOR_WORKER_ALLOCATOR": choice}
        env.pop("LD_PRELOAD", None)
        command = [sys.executable, "-m", "app.cli", "engine", "--base-model", "no-such-model"]
        done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 1 and "'no-such-model' is not installed" in done.stdout + done.stderr
        assert f"memory allocator: {expected} (TAILOR_WORKER_ALLOCATOR={choice})" in done.stderr


def test_a_job_records_the_allocator_its_process_runs_on(tmp_path):
    import torch

    from worker.training.provenance import _allocator, environment_record

    maps = tmp_path / "maps"
    maps.write_text(f"7f00-7f01 r-xp 0 08:01 1 {LIB}\n")
    assert _allocator(str(maps)) == "jemalloc" and _allocator(str(tmp_path / "missing")) == "system"
    assert environment_record("cpu", torch.float32)["allocator"] == preloaded_allocator()


def test_the_real_worker_reports_its_allocator_on_the_board(worker_process):
    """The memory estimate sizes a CPU job by the allocator its worker runs on (app/domain/estimates.py)."""
    import time

    from sqlalchemy import select

    from app.db import session_scope
    from app.models import WorkerNode

    expected = "jemalloc" if find_jemalloc() else "system"  # `auto`: restarted on jemalloc where it is installed
    deadline, seen = time.monotonic() + 30, None
    while time.monotonic() < deadline and seen != expected:
        with session_scope() as db:
            seen = db.scalar(select(WorkerNode.allocator).where(WorkerNode.name.like(f"%test-worker-{os.getpid()}")))
        time.sleep(0.3)
    assert seen == expected
