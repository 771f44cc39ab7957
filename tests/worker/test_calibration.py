"""A worker measures its own speed once per device and caches it in the data dir."""

from __future__ import annotations

import json

import worker.calibration as calibration


def test_calibration_measures_once_and_then_reads_the_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(calibration, "MEASURE_SECONDS", 0.0)  # warm-up + two steps
    flops = calibration.calibrated_flops(tmp_path, "cpu (2 cores)")
    assert flops is not None and 1e8 < flops < 1e15
    cache = list((tmp_path / "calibration").glob("*.json"))
    assert len(cache) == 1 and json.loads(cache[0].read_text())["flops"] == flops

    def must_not_measure(seconds=0.0):
        raise AssertionError("measured again")

    monkeypatch.setattr(calibration, "measure_flops", must_not_measure)
    assert calibration.calibrated_flops(tmp_path, "cpu (2 cores)") == flops


def test_the_worker_reports_its_calibrated_speed_on_the_board(monkeypatch):
    import time

    from sqlalchemy import delete, select

    from app.config import get_settings
    from app.db import session_scope
    from app.models import WorkerNode
    from worker import presence

    monkeypatch.setattr(get_settings(), "worker_calibration", True)
    monkeypatch.setattr(calibration, "calibrated_flops", lambda data_dir, device: 1.5e9)  # the measurement itself is tested above
    monkeypatch.setattr(presence, "HEARTBEAT_SECONDS", 0.2)
    name = "calibrating@tests"
    presence.start_presence(name, "gpu")
    try:
        deadline = time.monotonic() + 20
        seen = None
        while time.monotonic() < deadline and seen != 1.5e9:
            time.sleep(0.2)
            with session_scope() as db:
                seen = db.scalar(select(WorkerNode.calibrated_flops).where(WorkerNode.name == name))
        assert seen == 1.5e9
        from app.worker_environment import preloaded_allocator

        with session_scope() as db:  # and the allocator it runs on, for the memory estimate
            assert db.scalar(select(WorkerNode.allocator).where(WorkerNode.name == name)) == preloaded_allocator()
    finally:
        presence.stop_presence()
        presence._state.clear()
        with session_scope() as db:
            db.execute(delete(WorkerNode).where(WorkerNode.name == name))


def test_calibration_steps_like_a_job_on_the_device():
    """A CPU job runs 256-token passes (micro_batch_tokens auto); calibrating on whole 768-token
    batches measured a speed its jobs reached only 0.48 of. A GPU job runs the whole batch."""
    from app.domain.estimates import CPU_MICRO_BATCH_TOKENS

    cpu = calibration.calibration_passes("cpu")
    assert len(cpu) > 1 and all(b["input_ids"].numel() <= CPU_MICRO_BATCH_TOKENS for b in cpu)
    assert sum(b["input_ids"].shape[0] for b in cpu) == calibration.BATCH
    gpu = calibration.calibration_passes("cuda")
    assert len(gpu) == 1 and gpu[0]["input_ids"].shape == (calibration.BATCH, calibration.ROW_TOKENS)


def test_a_figure_measured_by_an_older_method_is_measured_again(tmp_path, monkeypatch):
    monkeypatch.setattr(calibration, "measure_flops", lambda seconds=0.0: 2e9)
    assert calibration.calibrated_flops(tmp_path, "cpu (2 cores)") == 2e9
    monkeypatch.setattr(calibration, "METHOD_VERSION", calibration.METHOD_VERSION + 1)
    monkeypatch.setattr(calibration, "measure_flops", lambda seconds=0.0: 3e9)
    assert calibration.calibrated_flops(tmp_path, "cpu (2 cores)") == 3e9
    assert len(list((tmp_path / "calibration").glob("*.json"))) == 2
