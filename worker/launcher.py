"""Launch the training engine for a job's layout, relay what its ranks say, stop them together.

- A world of one runs `run_engine` in this process (the path every single-device job takes).
- N devices of this machine: `python -m torch.distributed.run --standalone --nproc-per-node N
  -m worker.rank_main DIR` as a child process group. Progress of rank 0, every rank's memory and
  checkpoints come back as JSON lines (worker/rank_main.py) and go to the job's callbacks; the
  heartbeat keeps beating here; cancel stops torchrun and every rank within seconds (SIGTERM, then
  SIGKILL); rank 0 leaves the adapter in spec.output_dir and its result in DIR/result.json.
- K machines x M devices: handed to a Ray cluster (worker/ray_cluster.py).

A rank that raised reports the error, and the job fails with it. A rank that vanished without a
word (killed, out of memory, machine lost) makes the attempt lost: AttemptLost, and the job goes
back to the queue, where the reconciler sends it again and it resumes from its last checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from worker.rank_main import EVENTS_DIR, LAYOUT_FILE, RESULT_FILE, write_spec
from worker.training.spec import Progress, TrainingCallbacks, TrainingResult, TrainingSpec

log = logging.getLogger("tailor.launcher")
ROOT = Path(__file__).resolve().parent.parent
POLL_SECONDS = 0.2
STOP_GRACE_SECONDS = 5.0


class AttemptLost(RuntimeError):
    """A rank stopped without an error of its own: this attempt is lost, the job is re-queued."""


class PlainFailure(RuntimeError):
    """The attempt failed; the message is for people (the job page shows it as it is)."""


class RankFailed(PlainFailure):
    """A rank raised: the job fails with its message."""


@dataclass(frozen=True)
class RunLayout:
    """Where one attempt runs: machines x devices per machine, and how (EngineLayout's fields)."""

    machines: int = 1
    devices_per_machine: int = 1
    strategy: str = "single"
    cpu_offload: bool = False
    timeout_seconds: float = 300.0
    device_kind: str = "cpu"
    visible_devices: tuple[str, ...] = ()  # CUDA_VISIBLE_DEVICES for the ranks (the worker's --devices)

    @property
    def world(self) -> int:
        return self.machines * self.devices_per_machine

    def engine(self):
        from worker.training.distributed import EngineLayout

        return EngineLayout(strategy=self.strategy, cpu_offload=self.cpu_offload, timeout_seconds=self.timeout_seconds)


@dataclass
class EventRelay:
    """Reads the ranks' event files as they grow and hands the events on."""

    folder: Path
    callbacks: TrainingCallbacks
    on_ranks: Callable[[dict[int, dict]], None] | None = None
    offsets: dict[Path, int] = field(default_factory=dict)
    ranks: dict[int, dict[str, Any]] = field(default_factory=dict)
    last_progress: Progress | None = None
    errors: dict[int, str] = field(default_factory=dict)
    exited: set[int] = field(default_factory=set)

    def pump(self) -> None:
        changed = False
        for path in sorted(self.folder.glob("rank-*.jsonl")):
            with open(path) as f:
                f.seek(self.offsets.get(path, 0))
                while line := f.readline():
                    if not line.endswith("\n"):
                        break  # a line still being written: read it next time
                    self.offsets[path] = f.tell()
                    changed = self._handle(json.loads(line)) or changed
        if changed and self.on_ranks is not None:
            self.on_ranks(self.ranks)

    def _handle(self, event: dict[str, Any]) -> bool:
        rank, kind = int(event["rank"]), event["kind"]
        info = self.ranks.setdefault(rank, {})
        if kind == "started":
            info.update(pid=event["pid"], host=event["host"])
            return True
        if kind == "memory":
            info.update(memory_bytes=event["memory_bytes"], step=event["step"])
            return True
        if kind == "progress":
            data = {k: v for k, v in event.items() if k not in ("kind", "rank", "time")}
            self.last_progress = Progress(**data)
            self.callbacks.on_progress(self.last_progress)
        elif kind == "checkpoint" and hasattr(self.callbacks, "on_checkpoint"):
            self.callbacks.on_checkpoint()
        elif kind == "error":
            self.errors[rank] = f"{event['type']}: {event['message']}"
        elif kind == "exit":
            self.exited.add(rank)
        return False

    def pids(self) -> list[int]:
        return [int(info["pid"]) for info in self.ranks.values() if "pid" in info]


def launch_training(
    spec: TrainingSpec,
    callbacks: TrainingCallbacks,
    layout: RunLayout,
    workdir: Path,
    *,
    job_id: int | None = None,
    on_ranks: Callable[[dict[int, dict]], None] | None = None,
) -> TrainingResult:
    """Run `spec` on `layout` and return rank 0's result (status "cancelled" when stopped)."""
    if layout.machines > 1:
        from worker.ray_cluster import run_on_ray

        return run_on_ray(spec, callbacks, layout, workdir, job_id=job_id, on_ranks=on_ranks)
    if layout.world == 1:
        from worker.training.distributed import run_engine

        return run_engine(spec, callbacks, layout.engine()).result
    return run_process_group(spec, callbacks, layout, workdir, job_id=job_id, on_ranks=on_ranks)


def group_folder(spec: TrainingSpec, layout: RunLayout, workdir: Path) -> Path:
    folder = Path(workdir) / "group"
    (folder / EVENTS_DIR).mkdir(parents=True, exist_ok=True)
    write_spec(spec, folder)
    (folder / LAYOUT_FILE).write_text(json.dumps(layout.engine().as_dict()))
    return folder


def torchrun_command(nproc: int, folder: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",  # one machine: a rendezvous on a free local port
        f"--nproc-per-node={nproc}",
        "--max-restarts=0",  # a lost rank loses the attempt; the job queue retries it
        "--monitor-interval=0.5",
        "-m",
        "worker.rank_main",
        str(folder),
    ]


def run_process_group(
    spec: TrainingSpec,
    callbacks: TrainingCallbacks,
    layout: RunLayout,
    workdir: Path,
    *,
    job_id: int | None = None,
    on_ranks: Callable[[dict[int, dict]], None] | None = None,
) -> TrainingResult:
    folder = group_folder(spec, layout, workdir)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p))
    if job_id is not None:
        env["TAILOR_JOB_ID"] = str(job_id)
    if layout.visible_devices:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(layout.visible_devices)
    log.info("starting %d ranks (%s)", layout.world, layout.strategy)
    proc = subprocess.Popen(torchrun_command(layout.world, folder), cwd=str(ROOT), env=env, start_new_session=True)
    relay = EventRelay(folder / EVENTS_DIR, callbacks, on_ranks)
    cancelled = False
    try:
        while proc.poll() is None:
            relay.pump()
            if callbacks.should_stop():
                cancelled = True
                log.info("cancel: stopping %d ranks", layout.world)
                stop_group(proc, relay.pids())
                break
            time.sleep(POLL_SECONDS)
    except BaseException:
        stop_group(proc, relay.pids())
        raise
    relay.pump()
    if cancelled:
        return cancelled_result(relay.last_progress)
    result_file = folder / RESULT_FILE
    if proc.returncode == 0 and result_file.is_file():
        return TrainingResult(**json.loads(result_file.read_text()))
    silent = sorted(set(range(layout.world)) - relay.exited - set(relay.errors))
    if silent:
        raise AttemptLost(
            f"Rank {', '.join(map(str, silent))} of {layout.world} stopped without an error (killed, out of memory or its machine "
            "was lost); the job was put back in the queue and resumes from its last checkpoint."
        )
    if relay.errors:
        rank = min(relay.errors)
        raise RankFailed(f"Training failed on rank {rank} of {layout.world}: {relay.errors[rank]}")
    raise AttemptLost(f"The process group exited with code {proc.returncode}; the job was put back in the queue.")


def stop_group(proc: subprocess.Popen, rank_pids: list[int]) -> None:
    """SIGTERM torchrun (it stops its ranks) and the ranks, then SIGKILL whatever is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in [proc.pid, *rank_pids]:
            try:
                os.killpg(pid, sig) if pid == proc.pid else os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        while time.monotonic() < deadline and (proc.poll() is None or any(_alive(pid) for pid in rank_pids)):
            time.sleep(0.1)
        if proc.poll() is not None and not any(_alive(pid) for pid in rank_pids):
            return


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie of a process that is not our child counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
        return False


def cancelled_result(last: Progress | None) -> TrainingResult:
    return TrainingResult(
        status="cancelled",
        steps=last.step if last else 0,
        train_loss=last.loss if last else None,
        validation_loss=None,
        trainable_parameters=0,
        total_parameters=0,
        train_seconds=last.elapsed_seconds if last else 0.0,
        tokens_seen=0,
        peak_memory_bytes=int(last.memory_bytes or 0) if last else 0,
    )


def run_layout_for(job_layout: dict | None, settings) -> RunLayout:
    """The attempt's layout from the job's plan and this worker: "all devices" means this worker's."""
    layout = job_layout or {}
    timeout = float(settings.distributed_timeout_seconds)
    request = str(layout.get("request") or "1")
    if request in ("", "1") or int(layout.get("world") or 1) <= 1 and request != "all":
        return RunLayout(timeout_seconds=timeout)
    from app.services.workers import detect_devices

    devices = detect_devices(settings.worker_devices)
    kind = str(devices[0].get("kind") or "cpu")
    per_machine = len(devices) if request == "all" else int(layout.get("devices_per_machine") or 1)
    machines = int(layout.get("machines") or 1)
    strategy = str(layout.get("strategy") or "ddp")
    if machines * per_machine == 1:
        strategy = "single"
    elif strategy == "single":
        strategy = "ddp"
    visible = tuple(str(d["index"]) for d in devices if d.get("kind") == "cuda")
    return RunLayout(
        machines=machines,
        devices_per_machine=per_machine,
        strategy=strategy,
        cpu_offload=bool(layout.get("cpu_offload")),
        timeout_seconds=timeout,
        device_kind=kind,
        visible_devices=visible if machines == 1 else (),
    )
