"""The serving loop: take requests from Redis, decode them together, answer on their streams.

One iteration: beat (the engine's heartbeat), take new requests (blocking briefly only when
idle), resolve their adapters (cold ones load in the background), admit ready ones into the
running batch (prefill, merge), one decode step for every running row, drop finished and
cancelled rows, write the step's events in one round trip. Requests join and leave between two
decode steps (continuous batching); rows for different adapters share every forward pass.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from app.services.serving_protocol import HEARTBEAT_SECONDS, ServeEvent, ServeRequest, cancel_key, engines_key, queue_key
from worker.serving.adapters import AdapterCache, adapter_name
from worker.serving.batch import BASE, Row, RunningBatch
from worker.serving.events import EventSink
from worker.serving.jobs import Job
from worker.serving.prompts import ServeError, bad_request, check_context, check_sampling, context_length, prompt_ids
from worker.serving.sampling import make_generator, sample
from worker.serving.solo import SoloLane
from worker.serving.text import IncrementalDecoder, StopText

log = logging.getLogger("tailor.engine")

MAX_CONSECUTIVE_FAILURES = 5
PROGRESS_TIMEOUT_SECONDS = 60.0  # a loop that made no progress this long stops beating (the web then answers 503)


@dataclass
class EngineConfig:
    base_model: str
    name: str
    max_batch: int = 32
    max_adapters: int = 16
    adapter_memory_bytes: int = 1 << 30
    stop_grace_seconds: float = 15.0
    progress_timeout_seconds: float = PROGRESS_TIMEOUT_SECONDS  # a loop stuck this long stops beating


def default_engine_name(base_model: str) -> str:
    return f"engine-{base_model}-{socket.gethostname()}-{os.getpid()}"


class Engine:
    def __init__(self, config: EngineConfig, model, tokenizer, client, load_base: Callable[[], Any] | None = None):
        self.config = config
        self.load_base = load_base  # a fresh copy of the base model, for the solo lane (None: solo adapters refused)
        self.solo: SoloLane | None = None
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.client = client
        self.sink = EventSink(client)
        self.batch = RunningBatch(self)
        self.adapters = AdapterCache(self, max_adapters=config.max_adapters, memory_bytes=config.adapter_memory_bytes)
        self.pending: list[Job] = []  # popped, not yet in the batch (adapter loading or batch full)
        self.running: list[Job] = []  # in the batch, same order as batch.rows
        self.context_limit = context_length(model, tokenizer)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.eos_ids = _eos_ids(model, tokenizer)
        self.device = next(model.parameters()).device
        self.stopping = False
        self.stop_deadline = 0.0
        self.last_progress = time.monotonic()
        self.heart: threading.Thread | None = None
        self.heart_stop = threading.Event()
        self.steps = 0

    # --- lifecycle -------------------------------------------------------------------------------

    def request_stop(self, *_args: Any) -> None:
        if not self.stopping:
            log.info("engine %s stopping: finishing %d running requests", self.config.name, len(self.running))
            self.stopping = True
            self.stop_deadline = time.monotonic() + self.config.stop_grace_seconds
        else:
            self.stop_deadline = 0.0  # a second signal: stop now

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)

    def run(self) -> None:
        failures = 0
        log.info("engine %s serving %s (batch %d)", self.config.name, self.config.base_model, self.config.max_batch)
        try:
            while True:
                if self.stopping and (not self.running or time.monotonic() >= self.stop_deadline):
                    break
                if self.tick():
                    failures = 0
                else:
                    failures += 1
                    if failures >= MAX_CONSECUTIVE_FAILURES:
                        raise RuntimeError(f"The serving engine failed {failures} steps in a row; stopping.")
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        """Fail what is running, give back what was not started, remove the heartbeat."""
        self.heart_stop.set()
        if self.heart is not None:
            self.heart.join(timeout=10)
        try:
            self.fail_all(503, "engine_stopped", "The serving engine stopped before finishing this request; try again.", requeue=True)
            self.client.zrem(engines_key(self.config.base_model), self.config.name)
        except Exception:  # noqa: BLE001 - Redis gone: the heartbeat goes stale on its own
            log.exception("engine shutdown could not reach Redis")
        if self.solo is not None:
            self.solo.stop()
        self.adapters.shutdown()
        log.info("engine %s stopped", self.config.name)

    def fail_all(self, status: int, code: str, message: str, requeue: bool = False) -> None:
        for job in self.running:
            self.sink.add(job.id, ServeEvent(type="error", status=status, code=code, message=message))
        for job in self.pending:
            if requeue:
                self.client.lpush(queue_key(self.config.base_model), job.raw)
            else:
                self.sink.add(job.id, ServeEvent(type="error", status=status, code=code, message=message))
        self.running, self.pending = [], []
        self.batch = RunningBatch(self)
        self.sink.flush()

    def tick(self) -> bool:
        """One iteration; if it fails, its requests get a 500 error event and serving goes on."""
        try:
            self.iterate()
            return True
        except Exception as exc:  # noqa: BLE001 - fail this step's requests, keep serving
            log.exception("engine step failed")
            self.fail_all(500, "engine_error", f"The serving engine failed on this request ({type(exc).__name__}); try again.")
            return False

    # --- one iteration ---------------------------------------------------------------------------

    def iterate(self) -> None:
        self.beat()
        if not self.stopping:
            self.intake()
        self.resolve_adapters()
        self.admit()
        if self.running:
            self.decode_step()
        in_use = {job.adapter for job in self.running + self.pending}
        self.adapters.evict(in_use)
        self.sink.flush()

    def beat(self) -> None:
        """Note progress; the heartbeat thread beats while the loop keeps making progress."""
        self.last_progress = time.monotonic()
        if self.heart is None:
            self.heart = threading.Thread(target=self._heartbeat, name="engine-heartbeat", daemon=True)
            self.heart.start()

    def _heartbeat(self) -> None:
        """Beat every HEARTBEAT_SECONDS from a thread of its own, so a long prefill on a busy CPU does
        not look like a dead engine; a loop stuck for PROGRESS_TIMEOUT_SECONDS stops the beats."""
        key = engines_key(self.config.base_model)
        while not self.heart_stop.is_set():
            if time.monotonic() - self.last_progress < self.config.progress_timeout_seconds:
                try:
                    self.client.zadd(key, {self.config.name: time.time()})
                except Exception:  # noqa: BLE001 - Redis away for a moment: the next beat retries
                    log.warning("heartbeat failed", exc_info=True)
            self.heart_stop.wait(HEARTBEAT_SECONDS)

    def intake(self) -> None:
        room = self.config.max_batch - len(self.running) - len(self.pending)
        if room <= 0:
            return
        key = queue_key(self.config.base_model)
        if not self.running and not self.pending:
            popped = self.client.blpop([key], timeout=HEARTBEAT_SECONDS / 4)
            raws = [popped[1]] if popped else []
            room -= len(raws)
            if raws and room > 0:
                raws += self.client.lpop(key, room) or []
        else:
            raws = self.client.lpop(key, room) or []
        for raw in raws:
            self.take(raw)

    def take(self, raw: str) -> None:
        """Parse and check one popped request; a bad one is answered (or logged) and skipped."""
        try:
            request = ServeRequest.from_json(raw)
            if not isinstance(request.id, str) or not request.id:
                raise ValueError("no request id")
        except Exception as exc:  # noqa: BLE001 - malformed JSON never stops the loop
            request_id = _guess_id(raw)
            log.warning("malformed serve request %s skipped: %s", request_id or "(no id)", exc)
            if request_id:
                self.sink.add(request_id, bad_request(f"The request could not be read ({type(exc).__name__}).").event())
            return
        try:
            self.pending.append(self.prepare(request, raw))
        except ServeError as exc:
            log.info("request %s refused: %s %s", request.id, exc.status, exc.code)
            self.sink.add(request.id, exc.event())

    def prepare(self, request: ServeRequest, raw: str) -> Job:
        if request.deadline and time.time() > request.deadline:
            raise ServeError(503, "engine_overloaded", "No serving engine took the request in time; try again.")
        if request.base_model != self.config.base_model:
            raise bad_request(f"This engine serves {self.config.base_model!r}, not {request.base_model!r}.")
        sampling = check_sampling(request)
        ids = prompt_ids(self.tokenizer, request)
        check_context(len(ids), sampling.max_tokens, self.context_limit)
        return Job(
            request=request,
            raw=raw,
            sampling=sampling,
            prompt=ids,
            generator=make_generator(sampling.seed, self.device),
            decoder=IncrementalDecoder(self.tokenizer),
            stop=StopText(sampling.stop),
            adapter="" if request.adapter else BASE,
        )

    def resolve_adapters(self) -> None:
        for job in list(self.pending):
            ref = job.request.adapter
            if ref is None or job.adapter:
                continue
            try:
                state = self.adapters.status(ref)
            except ServeError as exc:
                self.pending.remove(job)
                self.sink.add(job.id, exc.event())
                continue
            if state == "ready":
                job.adapter = self.adapters.latest[ref.id]
            elif state == "solo":
                self.pending.remove(job)
                self.to_solo(job, ref)

    def to_solo(self, job: Job, ref) -> None:
        """A technique PEFT cannot mix in a batch: the solo lane serves it, one request at a time."""
        if self.load_base is None:
            self.sink.add(job.id, ServeError(400, "unsupported_adapter", "This engine serves LoRA adapters only.").event())
            return
        if self.solo is None:
            self.solo = SoloLane(self.load_base, self.client, self.eos_ids, self.pad_id)
        name = adapter_name(ref)
        job.adapter = name
        self.solo.submit(job, name, self.adapters.solo[name].folder)

    def admit(self) -> None:
        room = self.config.max_batch - len(self.running)
        ready = [job for job in self.pending if job.adapter][: max(room, 0)]
        if not ready:
            return
        for job in ready:
            self.pending.remove(job)
            self.sink.add(job.id, job.start_event())
        rows = [Row(key=job.id, adapter=job.adapter, position=0) for job in ready]
        logits = self.batch.add(rows, [job.prompt for job in ready], self.pad_id)
        self.running += ready
        for job, row_logits in zip(ready, logits, strict=True):
            self.choose(job, row_logits)
        self.drop_finished()

    def choose(self, job: Job, logits) -> None:
        token = sample(logits, job.sampling.temperature, job.sampling.top_p, job.generator)
        for event in job.accept(token, self.eos_ids):
            self.sink.add(job.id, event)

    def decode_step(self) -> None:
        pipe = self.client.pipeline(transaction=False)
        for job in self.running:
            pipe.exists(cancel_key(job.id))
        for job, cancelled in zip(list(self.running), pipe.execute(), strict=True):
            if cancelled:
                log.info("request %s cancelled by its client", job.id)
                job.finished = True
        self.drop_finished()
        if not self.running:
            return
        logits = self.batch.step([job.next_token for job in self.running])
        self.steps += 1
        for job, row_logits in zip(self.running, logits, strict=True):
            self.choose(job, row_logits)
        self.drop_finished()

    def drop_finished(self) -> None:
        keep = [i for i, job in enumerate(self.running) if not job.finished]
        if len(keep) != len(self.running):
            self.batch.keep(keep)
            self.running = [self.running[i] for i in keep]


def _eos_ids(model, tokenizer) -> set[int]:
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif isinstance(configured, list):
        ids.update(int(i) for i in configured)
    return ids


def _guess_id(raw: str | bytes) -> str:
    try:
        data = json.loads(raw)
    except (ValueError, TypeError):
        return ""
    value = data.get("id") if isinstance(data, dict) else None
    return value if isinstance(value, str) else ""
