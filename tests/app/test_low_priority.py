"""Heavy work in the web process (an upload's ingest) runs at a lower CPU priority."""

from __future__ import annotations

import os
import threading

import pytest

from app.services.low_priority import NICENESS, run_at_low_priority


def _own_priority() -> tuple[int, str]:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id()), threading.current_thread().name


def test_the_work_runs_niced_in_its_own_thread_and_the_caller_keeps_its_priority():
    before = _own_priority()[0]
    priority, thread = run_at_low_priority(_own_priority)
    assert priority == min(before + NICENESS, 19) and thread == "tailor-low-priority"
    assert _own_priority()[0] == before  # the request's thread is untouched


def test_results_and_errors_reach_the_caller():
    assert run_at_low_priority(sum, [1, 2, 3], start=4) == 10
    with pytest.raises(ValueError, match="bad file"):
        run_at_low_priority(lambda: (_ for _ in ()).throw(ValueError("bad file")))
