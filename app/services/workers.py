"""Workers: what each worker process reports about itself, and the status board built from it."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import Job, JobStatus, WorkerNode, utcnow

HEARTBEAT_SECONDS = 10.0


@dataclass(frozen=True)
class DeviceInfo:
    device: str
    memory_bytes: int | None
    devices: tuple[dict, ...] = ()  # every device offered (distributed jobs): {index, name, kind, memory_bytes}
    calibrated_flops: float | None = None  # the worker's own measured speed (worker/calibration.py)
    allocator: str | None = None  # "jemalloc" | "system" (app/worker_environment.py preloaded_allocator)


def detect_device() -> DeviceInfo:
    """The worker's accelerator without importing torch: nvidia-smi for the GPUs this process
    may use (CUDA_VISIBLE_DEVICES), else the CPU and the machine's memory."""
    if shutil.which("nvidia-smi") and os.environ.get("CUDA_VISIBLE_DEVICES", "0") != "":
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0].strip() or "0"
        try:
            out = subprocess.run(
                ["nvidia-smi", f"--id={visible}", "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            ).stdout.strip()
            name, memory_mib = (part.strip() for part in out.splitlines()[0].split(","))
            return DeviceInfo(f"cuda:{visible} {name}", int(float(memory_mib)) * 1024 * 1024)
        except (subprocess.SubprocessError, ValueError, IndexError, OSError):
            pass
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        memory = None
    return DeviceInfo(f"cpu ({os.cpu_count()} cores)", memory)


def record_worker_heartbeat(db: Session, *, name: str, queues: str, device: DeviceInfo) -> None:
    worker = db.scalar(select(WorkerNode).where(WorkerNode.name == name))
    now = utcnow()
    if worker is None:
        worker = WorkerNode(
            name=name,
            hostname=socket.gethostname(),
            pid=os.getpid(),
            queues=queues,
            device=device.device,
            device_memory_bytes=device.memory_bytes,
            started_at=now,
        )
        db.add(worker)
    worker.pid, worker.queues, worker.device, worker.device_memory_bytes = os.getpid(), queues, device.device, device.memory_bytes
    worker.devices = [dict(d) for d in device.devices] or None
    if device.calibrated_flops is not None:
        worker.calibrated_flops = device.calibrated_flops
    if device.allocator is not None:
        worker.allocator = device.allocator
    worker.heartbeat_at = now
    worker.stopped_at = None
    db.flush()


def record_worker_stopped(db: Session, name: str) -> None:
    worker = db.scalar(select(WorkerNode).where(WorkerNode.name == name))
    if worker is not None:
        worker.stopped_at = utcnow()


@dataclass
class WorkerStatus:
    name: str
    hostname: str
    queues: list[str]
    device: str
    device_memory_bytes: int | None
    state: str  # "busy" | "idle" | "offline" | "stopped"
    heartbeat_at: datetime
    current_job_id: int | None
    current_job_name: str | None
    devices: list[dict] | None = None
    calibrated_flops: float | None = None
    allocator: str | None = None


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


WORKER_STATES = ("busy", "idle", "offline", "stopped")


def worker_counts(board: list[WorkerStatus]) -> dict[str, int]:
    """How many workers are in each state: what people who are not administrators see of the board
    (machine names, devices and who is busy with what are for administrators only)."""
    return {state: sum(1 for w in board if w.state == state) for state in WORKER_STATES}


def worker_board(db: Session, viewer_workspace_id: int, stale_after_seconds: float = 3 * HEARTBEAT_SECONDS) -> list[WorkerStatus]:
    """Every known worker, newest first. A job of another workspace shows as busy without its name."""
    running = {job.worker_name: job for job in db.scalars(select(Job).where(Job.status == JobStatus.running))}
    cutoff = utcnow() - timedelta(seconds=stale_after_seconds)
    board = []
    for worker in db.scalars(select(WorkerNode).order_by(WorkerNode.heartbeat_at.desc())):
        job = running.get(worker.name)
        if worker.stopped_at is not None:
            state = "stopped"
        elif _aware(worker.heartbeat_at) < cutoff:
            state = "offline"
        else:
            state = "busy" if job else "idle"
        mine = job is not None and job.workspace_id == viewer_workspace_id
        board.append(
            WorkerStatus(
                name=worker.name,
                hostname=worker.hostname,
                queues=worker.queues.split(","),
                device=worker.device,
                device_memory_bytes=worker.device_memory_bytes,
                state=state,
                heartbeat_at=worker.heartbeat_at,
                current_job_id=job.id if job is not None and mine and state == "busy" else None,
                current_job_name=(job.name if mine else "a job of another workspace") if job and state == "busy" else None,
                devices=list(worker.devices or []) or None,
                calibrated_flops=worker.calibrated_flops,
                allocator=worker.allocator,
            )
        )
    return board


# --- distributed (issue 13): every device a worker offers -------------------------------------


def parse_gpu_list(csv_text: str, selection: str = "") -> list[dict]:
    """`nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader,nounits` lines -> the
    devices in `selection` ("0,1,2,3"; empty = all listed)."""
    wanted = {part.strip() for part in selection.split(",") if part.strip()}
    devices = []
    for line in csv_text.strip().splitlines():
        parts = [part.strip() for part in line.split(",")]
        if len(parts) < 3 or (wanted and parts[0] not in wanted):
            continue
        try:
            memory = int(float(parts[2])) * 1024 * 1024
        except ValueError:
            memory = None
        devices.append({"index": parts[0], "name": parts[1], "kind": "cuda", "memory_bytes": memory})
    return devices


def detect_devices(selection: str = "") -> tuple[dict, ...]:
    """The GPUs this worker offers (`--devices 0,1,2,3`, else CUDA_VISIBLE_DEVICES, else all),
    or the CPU as one device; without importing torch."""
    selection = selection or os.environ.get("CUDA_VISIBLE_DEVICES", "")
    if shutil.which("nvidia-smi") and os.environ.get("CUDA_VISIBLE_DEVICES", "0") != "":
        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=index,name,memory.total", "--format=csv,noheader,nounits"],
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            ).stdout
            gpus = parse_gpu_list(out, selection)
            if gpus:
                return tuple(gpus)
        except (subprocess.SubprocessError, OSError):
            pass
    cpu = detect_device()
    return ({"index": "cpu", "name": cpu.device, "kind": "cpu", "memory_bytes": cpu.memory_bytes},)
