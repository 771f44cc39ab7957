"""Run heavy work inside the web process at a lower CPU priority, so that pages keep answering
while, say, a 1 GB upload is parsed and profiled. On Linux a nice value belongs to a thread, so
the work runs in a fresh thread that lowers its own priority and ends with the work (a pooled
thread could not raise it back without privileges)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

NICENESS = 10


def run_at_low_priority(fn: Callable[..., T], *args, **kwargs) -> T:
    """fn(*args, **kwargs) in a fresh low-priority thread; the caller waits (without using the
    CPU) and gets its result or its exception."""
    outcome: dict[str, object] = {}

    def target() -> None:
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICENESS)
        except (AttributeError, OSError):  # not Linux, or not allowed: run at normal priority
            pass
        try:
            outcome["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread below
            outcome["error"] = exc

    worker = threading.Thread(target=target, name="tailor-low-priority")
    worker.start()
    worker.join()
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]
