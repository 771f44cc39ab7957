"""scripts/gpu-check --smoke: the prepared device check runs end to end on a CPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_gpu_check_smoke_reports_every_technique_for_both_systems(tmp_path):
    done = subprocess.run(
        ["scripts/gpu-check", str(tmp_path), "--smoke"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "CUDA_VISIBLE_DEVICES": ""},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    rows = {(r["technique"], r.get("system")): r for r in report["results"]}
    for technique in ("lora", "dora", "ia3", "prompt_tuning", "full"):
        for system in ("tailor", "trainer"):
            row = rows[(technique, system)]
            assert "error" not in row, row
            assert row["tokens_per_second"] > 0 and row["peak_memory_bytes"] > 0
    assert "CUDA" in rows[("qlora", None)]["skipped"]  # skipped with its reason on a CPU
    sft = rows[("lora", "sft")]  # TRL's SFTTrainer, the main baseline, where TRL is installed (it is here)
    assert "error" not in sft and "skipped" not in sft, sft
    assert sft["tokens_per_second"] > 0 and sft["peak_memory_bytes"] > 0
    assert ("dora", "sft") not in rows  # compared on LoRA only
    assert "tailor/sft" in done.stdout
    assert report["distributed"]["status"] in ("not available", "ran", "failed")
    assert "tailor/trainer" in done.stdout and "MFU" in done.stdout
    # The check imports no part of the web app's services, no Celery, no database driver.
    probe = (
        "import sys, worker.training.gpu_check as g; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('celery', 'sqlalchemy', 'redis') or m.startswith('app.services')))"
    )
    imported = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, env={"PYTHONPATH": str(ROOT)})
    assert imported.stdout.strip() == "[]", imported.stdout + imported.stderr


def test_without_trl_the_sft_row_says_why(monkeypatch):
    import importlib.util

    from worker.training import gpu_check

    real = importlib.util.find_spec
    assert gpu_check.sft_skip_reason("lora") is None  # Tailor's install has TRL
    assert "lora only" in gpu_check.sft_skip_reason("dora")  # the other techniques have no SFTTrainer row
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "trl" else real(name, *a))
    assert "not installed" in gpu_check.sft_skip_reason("lora")  # a bare GPU machine: the row is skipped with this
