"""The program each rank of a process group runs: `python -m torch.distributed.run … -m worker.rank_main DIR`.

DIR (written by worker/launcher.py) holds spec.json and layout.json; the rank writes its events
(started, progress, memory, checkpoint, error, exit) as JSON lines to DIR/events/rank-N.jsonl,
which the launcher relays to the job, and rank 0 writes DIR/result.json. Log lines carry job= and rank=.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from worker.training.spec import Progress, TrainingSpec

log = logging.getLogger("tailor.rank")
SPEC_FILE, LAYOUT_FILE, RESULT_FILE, EVENTS_DIR = "spec.json", "layout.json", "result.json", "events"
MEMORY_WRITE_SECONDS = 1.0


def write_spec(spec: TrainingSpec, folder: Path) -> None:
    (folder / SPEC_FILE).write_text(json.dumps(asdict(spec)))


def read_spec(folder: Path) -> TrainingSpec:
    data = json.loads((folder / SPEC_FILE).read_text())
    for key in ("train_rows", "validation_rows"):  # JSON turned the row tuples into lists
        data[key] = [tuple(row) if isinstance(row, list) else row for row in data[key]]
    names = {f.name for f in fields(TrainingSpec)}
    return TrainingSpec(**{k: v for k, v in data.items() if k in names})


class RankEvents:
    """TrainingCallbacks of one rank: JSON lines the launcher reads. Cancellation does not come
    through here: the launcher stops the whole group."""

    def __init__(self, events_dir: Path, rank: int):
        events_dir.mkdir(parents=True, exist_ok=True)
        self.rank = rank
        self._file = open(events_dir / f"rank-{rank}.jsonl", "a", buffering=1)  # noqa: SIM115 - open for the run
        self._last_memory = 0.0

    def emit(self, kind: str, **data: Any) -> None:
        self._file.write(json.dumps({"kind": kind, "rank": self.rank, "time": time.time(), **data}) + "\n")

    def on_progress(self, progress: Progress) -> None:
        if self.rank == 0:
            self.emit("progress", **asdict(progress))
        now = time.monotonic()
        if now - self._last_memory >= MEMORY_WRITE_SECONDS or progress.step >= progress.total_steps:
            self._last_memory = now
            self.emit("memory", step=progress.step, memory_bytes=progress.memory_bytes)

    def should_stop(self) -> bool:
        return False

    def on_checkpoint(self) -> None:
        self.emit("checkpoint")

    def close(self) -> None:
        self._file.close()


def _configure_logging(rank: int) -> None:
    from app.logs import configure_logging, name_job_for_process

    configure_logging(os.environ.get("TAILOR_LOG_LEVEL", "INFO"), os.environ.get("TAILOR_LOG_FORMAT", "text"))

    class RankFilter(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            if not getattr(record, "rank_tagged", False):
                record.msg, record.rank_tagged = f"rank={rank} {record.msg}", True
            return True

    for handler in logging.getLogger().handlers:
        handler.addFilter(RankFilter())
    job = os.environ.get("TAILOR_JOB_ID")
    if job:
        name_job_for_process(int(job))


def main(folder: Path) -> int:
    rank = int(os.environ.get("RANK", "0"))
    _configure_logging(rank)
    events = RankEvents(folder / EVENTS_DIR, rank)
    events.emit("started", pid=os.getpid(), host=socket.gethostname(), local_rank=int(os.environ.get("LOCAL_RANK", "0")))
    try:
        from worker.training.distributed import EngineLayout, run_engine

        spec = read_spec(folder)
        layout = EngineLayout.from_dict(json.loads((folder / LAYOUT_FILE).read_text()))
        log.info("training %s over %s ranks (%s)", spec.technique, os.environ.get("WORLD_SIZE", "1"), layout.strategy)
        run = run_engine(spec, events, layout)
        if rank == 0:
            tmp = folder / f".{RESULT_FILE}.partial"
            tmp.write_text(json.dumps(asdict(run.result)))
            os.replace(tmp, folder / RESULT_FILE)
    except BaseException as exc:
        log.exception("rank %s failed", rank)
        events.emit("error", type=type(exc).__name__, message=str(exc)[:2000])
        events.close()
        return 1
    events.emit("exit")
    events.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
