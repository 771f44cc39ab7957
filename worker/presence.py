"""The worker's presence on the status board: a heartbeat thread in the worker's main process."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace

from app.config import get_settings
from app.db import session_scope
from app.services.workers import (
    HEARTBEAT_SECONDS,
    DeviceInfo,
    detect_device,
    detect_devices,
    record_worker_heartbeat,
    record_worker_stopped,
)
from app.worker_environment import preloaded_allocator
from worker.health import start_health_server

log = logging.getLogger("tailor.worker")
_state: dict = {}


def start_presence(name: str, queues: str) -> None:
    first = detect_device()
    device = DeviceInfo(first.device, first.memory_bytes, detect_devices(get_settings().worker_devices), allocator=preloaded_allocator())
    stop = threading.Event()

    settings = get_settings()
    measured: dict = {}

    def calibrate() -> None:
        from worker.calibration import calibrated_flops

        measured["flops"] = calibrated_flops(settings.data_dir, device.device)

    def beat() -> None:
        while True:
            try:
                with session_scope() as db:
                    current = replace(device, calibrated_flops=measured.get("flops"))
                    record_worker_heartbeat(db, name=name, queues=queues, device=current)
                _state["last_beat"] = time.monotonic()
            except Exception:  # noqa: BLE001 - the database may be briefly away; try again next beat
                log.warning("worker %s: presence heartbeat failed", name, exc_info=True)
            if stop.wait(HEARTBEAT_SECONDS):
                return

    if settings.worker_calibration and "gpu" in queues.split(","):
        # Its own thread: the heartbeat (and /health) must not wait for the measurement.
        threading.Thread(target=calibrate, name="tailor-calibration", daemon=True).start()
    thread = threading.Thread(target=beat, name="tailor-presence", daemon=True)
    _state.update(name=name, stop=stop, thread=thread, last_beat=None)
    thread.start()
    log.info("worker %s on %s consuming %s", name, device.device, queues)
    if settings.worker_health_port:
        _state["health"] = start_health_server(
            settings.worker_health_port,
            settings.worker_health_host,
            name,
            lambda: _state.get("last_beat"),
            stale_after=3 * HEARTBEAT_SECONDS,
        )


def stop_presence() -> None:
    if not _state:
        return
    if "health" in _state:
        _state["health"].shutdown()
    _state["stop"].set()
    _state["thread"].join(timeout=5)
    try:
        with session_scope() as db:
            record_worker_stopped(db, _state["name"])
    except Exception:  # noqa: BLE001
        log.warning("could not mark worker %s stopped", _state["name"], exc_info=True)
