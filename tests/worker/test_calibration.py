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
