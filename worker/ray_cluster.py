"""Multi-machine jobs on a Ray cluster (TAILOR_RAY_ADDRESS): Ray Train places, restarts and tears down.

The worker that claimed the job is the driver. It starts `python -m worker.ray_cluster DIR` as a
child process group (so cancel is one kill: when the driver dies, Ray stops the job's actors) and
reads its events like a torchrun group's (worker/launcher.py). The driver:

1. connects to the cluster and refuses a cluster too small for K x M workers with a plain message
   before anything starts (Ray would otherwise wait for resources forever; nothing is half-started);
2. runs `TorchTrainer(train_loop_per_worker, ScalingConfig(num_workers=K*M), TorchConfig(gloo|nccl,
   timeout), FailureConfig(max_failures))`. Ray places all K*M processes at once, sets up the
   process group and, after a failure, restarts the whole group: each worker runs the same engine
   function (worker.training.distributed.run_engine) and resumes from the last checkpoint, which
   rank 0 reports to Ray Train (stored under TAILOR_RAY_STORAGE_PATH, reachable from every node);
3. relays rank 0's progress and every rank's memory through a Ray queue into DIR/events, and
   collects the adapter from the final checkpoint rank 0 reports into spec.output_dir.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from worker.launcher import ROOT, EventRelay, PlainFailure, RunLayout, cancelled_result, group_folder, stop_group
from worker.rank_main import EVENTS_DIR, RESULT_FILE, read_spec
from worker.training.spec import Progress, TrainingCallbacks, TrainingResult, TrainingSpec

log = logging.getLogger("tailor.ray")
RAY_FILE = "ray.json"
ERROR_FILE = "error.json"
ADAPTER_DIR = "adapter"


class ClusterTooSmall(PlainFailure):
    """The Ray cluster cannot place every process of the job at once."""


def needed_resources(layout: RunLayout) -> dict[str, float]:
    return {"GPU" if layout.device_kind == "cuda" else "CPU": float(layout.world)}


def too_small_message(available: dict[str, float], layout: RunLayout) -> str | None:
    """A plain sentence when the cluster lacks what K x M workers need, else None."""
    for resource, amount in needed_resources(layout).items():
        have = float(available.get(resource, 0.0))
        if have < amount:
            kind = "GPUs" if resource == "GPU" else "CPUs"
            return (
                f"The Ray cluster has {have:g} {kind} in all; this job needs {amount:g} ({layout.machines} machines × "
                f"{layout.devices_per_machine} devices, one {kind[:-1]} each). Add machines to the cluster (`ray start "
                "--address HEAD:6379` on each) or choose fewer devices; nothing was started."
            )
    return None


# --------------------------------------------------------------------------- in the worker (driver)


def run_on_ray(
    spec: TrainingSpec,
    callbacks: TrainingCallbacks,
    layout: RunLayout,
    workdir: Path,
    *,
    job_id: int | None = None,
    on_ranks: Callable[[dict[int, dict]], None] | None = None,
    address: str | None = None,
    storage_path: str | None = None,
    max_failures: int | None = None,
) -> TrainingResult:
    """Run `spec` on the Ray cluster; rank 0's result, or status "cancelled" when stopped."""
    import subprocess

    from app.config import get_settings

    settings = get_settings()
    folder = group_folder(spec, layout, workdir)
    ray_config = {
        "address": address or settings.ray_address,
        "storage_path": storage_path or settings.ray_storage_path or str((settings.data_dir / "ray").resolve()),
        "max_failures": settings.ray_max_failures if max_failures is None else max_failures,
        "layout": {**asdict(layout), "visible_devices": list(layout.visible_devices)},
        "job_id": job_id,
    }
    (folder / RAY_FILE).write_text(json.dumps(ray_config))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p))
    proc = subprocess.Popen([sys.executable, "-m", "worker.ray_cluster", str(folder)], cwd=str(ROOT), env=env, start_new_session=True)
    relay = EventRelay(folder / EVENTS_DIR, callbacks, on_ranks)
    try:
        while proc.poll() is None:
            relay.pump()
            if callbacks.should_stop():
                log.info("cancel: stopping the Ray driver; Ray tears the job's workers down")
                stop_group(proc, [])
                relay.pump()
                return cancelled_result(relay.last_progress)
            time.sleep(0.2)
    except BaseException:
        stop_group(proc, [])
        raise
    relay.pump()
    error_file = folder / ERROR_FILE
    if error_file.is_file():
        error = json.loads(error_file.read_text())
        if error.get("type") == "ClusterTooSmall":
            raise ClusterTooSmall(error["message"])
        raise PlainFailure(f"The Ray job failed after {ray_config['max_failures']} restarts: {error['message']}")
    result_file = folder / RESULT_FILE
    if proc.returncode != 0 or not result_file.is_file():
        raise PlainFailure(f"The Ray driver exited with code {proc.returncode} without a result; see the worker's log.")
    return TrainingResult(**json.loads(result_file.read_text()))


# --------------------------------------------------------------------------- the Ray driver process


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """What every Ray Train worker runs: the engine function, resuming from Ray's last checkpoint."""
    import ray.train
    from ray.train import Checkpoint

    from worker.training.distributed import EngineLayout, run_engine

    context = ray.train.get_context()
    rank = context.get_world_rank()
    os.environ.setdefault("LOCAL_RANK", str(context.get_local_rank()))
    queue = config["queue"]
    spec: TrainingSpec = config["spec"]
    local = Path(tempfile.mkdtemp(prefix=f"tailor-ray-rank{rank}-"))
    checkpoint_dir = local / "checkpoint"
    restored = ray.train.get_checkpoint()
    if restored is not None:
        with restored.as_directory() as path:
            shutil.copytree(path, checkpoint_dir)
    spec = replace(spec, checkpoint_dir=str(checkpoint_dir), output_dir=str(local / ADAPTER_DIR))
    events = QueueEvents(queue, rank)
    events.emit("started", pid=os.getpid(), host=os.uname().nodename)

    def report_checkpoint(recipe) -> None:  # every rank reports; rank 0 hands Ray the checkpoint
        checkpoint = Checkpoint.from_directory(str(checkpoint_dir)) if rank == 0 else None
        ray.train.report({"step": recipe.state.step}, checkpoint=checkpoint)

    try:
        run = run_engine(spec, events, EngineLayout.from_dict(config["engine"]), after_checkpoint=report_checkpoint)
        final = local / "final"
        if rank == 0:
            final.mkdir()
            if run.result.status == "completed":
                shutil.copytree(local / ADAPTER_DIR, final / ADAPTER_DIR)
            (final / RESULT_FILE).write_text(json.dumps(asdict(run.result)))
        ray.train.report({"done": 1}, checkpoint=Checkpoint.from_directory(str(final)) if rank == 0 else None)
        events.emit("exit")
    finally:
        shutil.rmtree(local, ignore_errors=True)


class QueueEvents:
    """A Ray worker's TrainingCallbacks: events into a Ray queue, which the driver writes to DIR/events."""

    def __init__(self, queue, rank: int):
        self.queue, self.rank = queue, rank
        self._last_memory = 0.0

    def emit(self, kind: str, **data: Any) -> None:
        self.queue.put({"kind": kind, "rank": self.rank, "time": time.time(), **data})

    def on_progress(self, progress: Progress) -> None:
        if self.rank == 0:
            self.emit("progress", **asdict(progress))
        now = time.monotonic()
        if now - self._last_memory >= 1.0 or progress.step >= progress.total_steps:
            self._last_memory = now
            self.emit("memory", step=progress.step, memory_bytes=progress.memory_bytes)

    def should_stop(self) -> bool:
        return False

    def on_checkpoint(self) -> None:
        self.emit("checkpoint")


def _pump_queue(queue, folder: Path, stop: threading.Event) -> None:
    files: dict[int, Any] = {}
    try:
        while not stop.is_set() or not queue.empty():
            try:
                event = queue.get(timeout=0.5)
            except Exception:  # noqa: BLE001 - ray.util.queue.Empty: nothing yet
                continue
            rank = int(event["rank"])
            if rank not in files:
                files[rank] = open(folder / f"rank-{rank}.jsonl", "a", buffering=1)  # noqa: SIM115 - kept open while relaying
            files[rank].write(json.dumps(event) + "\n")
    finally:
        for f in files.values():
            f.close()


def drive(folder: Path) -> int:
    """The driver process: check the cluster, fit, collect the adapter. Exit 0 with DIR/result.json."""
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.util.queue import Queue

    from worker.training.distributed import backend_for

    config = json.loads((folder / RAY_FILE).read_text())
    layout_data = config["layout"]
    layout = RunLayout(**{**layout_data, "visible_devices": tuple(layout_data.get("visible_devices") or ())})
    spec = read_spec(folder)
    ray.init(address=config["address"] or "auto", logging_level=logging.WARNING, log_to_driver=True)
    try:
        message = too_small_message(ray.cluster_resources(), layout)
        if message:
            (folder / ERROR_FILE).write_text(json.dumps({"type": "ClusterTooSmall", "message": message}))
            return 3
        queue = Queue()
        stop = threading.Event()
        pump = threading.Thread(target=_pump_queue, args=(queue, folder / EVENTS_DIR, stop), daemon=True)
        pump.start()
        use_gpu = layout.device_kind == "cuda"
        trainer = TorchTrainer(
            train_loop_per_worker,
            train_loop_config={"spec": spec, "engine": layout.engine().as_dict(), "queue": queue},
            torch_config=TorchConfig(backend=backend_for(layout.device_kind), timeout_s=int(layout.timeout_seconds)),
            scaling_config=ScalingConfig(num_workers=layout.world, use_gpu=use_gpu, resources_per_worker={"GPU" if use_gpu else "CPU": 1}),
            run_config=RunConfig(
                name=f"tailor-job-{config.get('job_id') or 'run'}-{int(time.time())}",
                storage_path=config["storage_path"],
                failure_config=FailureConfig(max_failures=int(config["max_failures"])),
                checkpoint_config=CheckpointConfig(num_to_keep=2),
            ),
        )
        try:
            result = trainer.fit()
        except Exception as exc:  # noqa: BLE001 - Ray gave up after its restarts: say why
            (folder / ERROR_FILE).write_text(json.dumps({"type": type(exc).__name__, "message": str(exc)[:2000]}))
            return 4
        finally:
            stop.set()
            pump.join(timeout=10)
        if result.checkpoint is None:
            (folder / ERROR_FILE).write_text(json.dumps({"type": "NoResult", "message": "rank 0 reported no result"}))
            return 4
        with result.checkpoint.as_directory() as path:
            final = Path(path)
            if (final / ADAPTER_DIR).is_dir():
                shutil.copytree(final / ADAPTER_DIR, spec.output_dir, dirs_exist_ok=True)
            shutil.copyfile(final / RESULT_FILE, folder / RESULT_FILE)
        return 0
    finally:
        ray.shutdown()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    sys.exit(drive(Path(sys.argv[1])))
