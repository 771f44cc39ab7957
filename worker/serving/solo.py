"""Adapters PEFT cannot mix in one batch, served one request at a time beside the running batch.

PEFT's mixed-adapter batches (`adapter_names=`) exist for LoRA layers only, and one PeftModel holds
adapters of one PEFT type. Every other technique Tailor trains - IA3, LoHa, LoKr, VeRA, AdaLoRA,
bottleneck adapters, prompt tuning, prefix tuning, P-tuning - is served here: on a thread of its
own, with a second copy of the base model (loaded the first time such an adapter is asked for)
wrapped in that one adapter (kept until another solo adapter is asked for), one request after
another with PEFT's own `generate` (which knows how each technique feeds its virtual tokens or
scalings), streaming token by token through the same Job logic (stop strings, max_tokens, end of
sequence) and honouring the cancel key. The LoRA batch keeps decoding meanwhile.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from app.services.serving_protocol import ServeEvent, cancel_key
from worker.serving.events import EventSink
from worker.serving.jobs import Job

log = logging.getLogger("tailor.engine.solo")


class SoloLane:
    def __init__(self, load_base: Callable[[], Any], client, eos_ids: set[int], pad_id: int):
        self.load_base = load_base  # () -> a fresh base model (the engine's own copy stays untouched)
        self.client = client
        self.sink = EventSink(client)
        self.eos_ids = eos_ids
        self.pad_id = pad_id
        self.jobs: queue.Queue[tuple[Job, str, Path] | None] = queue.Queue()
        self.model: Any = None
        self.adapter = ""
        self.stopping = False
        self.busy = threading.Event()
        self.thread = threading.Thread(target=self._work, name="solo-lane", daemon=True)
        self.thread.start()

    def submit(self, job: Job, name: str, folder: Path) -> None:
        self.jobs.put((job, name, folder))

    def pending(self) -> int:
        return self.jobs.qsize() + (1 if self.busy.is_set() else 0)

    def stop(self) -> None:
        self.stopping = True
        self.jobs.put(None)
        self.thread.join(timeout=30)
        while True:
            try:
                item = self.jobs.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                self._fail(item[0], 503, "engine_stopped", "The serving engine stopped before this request; try again.")

    def _fail(self, job: Job, status: int, code: str, message: str) -> None:
        self.sink.send(job.id, ServeEvent(type="error", status=status, code=code, message=message))

    def _work(self) -> None:
        while not self.stopping:
            item = self.jobs.get()
            if item is None:
                return
            job, name, folder = item
            self.busy.set()
            try:
                self._generate(job, name, folder)
            except Exception as exc:  # noqa: BLE001 - this request fails, the lane goes on
                log.exception("solo request %s failed", job.id)
                self._fail(job, 500, "engine_error", f"The serving engine failed on this request ({type(exc).__name__}); try again.")
            finally:
                self.busy.clear()

    def _plug(self, name: str, folder: Path):
        from peft import PeftModel

        if self.adapter != name:
            base = self._release() if self.model is not None else self.load_base()
            self.model = PeftModel.from_pretrained(base, str(folder), adapter_name=name).eval()
            self.adapter = name
        return self.model

    def _release(self):
        """The base model back from the current adapter (a fresh copy if PEFT cannot take it out)."""
        model, self.model, self.adapter = self.model, None, ""
        if model.peft_config[model.active_adapter].is_prompt_learning:
            return model.get_base_model()  # virtual tokens live beside the base model, which is untouched
        try:
            return model.unload()
        except Exception:  # noqa: BLE001 - a technique without unload: start from a fresh copy
            return self.load_base()

    def _generate(self, job: Job, name: str, folder: Path) -> None:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        from worker.serving.sampling import is_greedy

        model = self._plug(name, folder)
        lane = self

        class Streamer:
            prompt_seen = False

            def put(self, value) -> None:
                if not self.prompt_seen:
                    self.prompt_seen = True
                    return
                if job.finished:
                    return
                for event in job.accept(int(value.reshape(-1)[0]), lane.eos_ids):
                    lane.sink.add(job.id, event)
                lane.sink.flush()

            def end(self) -> None:
                pass

        class Stop(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                if not job.finished and (lane.stopping or lane.client.exists(cancel_key(job.id))):
                    job.finished = True
                    if lane.stopping:
                        lane._fail(job, 503, "engine_stopped", "The serving engine stopped before finishing this request; try again.")
                return torch.full((input_ids.shape[0],), job.finished, dtype=torch.bool, device=input_ids.device)

        sampling = job.sampling
        options: dict[str, Any] = {"do_sample": False}
        if not is_greedy(sampling.temperature):
            options = {"do_sample": True, "temperature": sampling.temperature, "top_p": sampling.top_p}
            torch.manual_seed(sampling.seed if sampling.seed is not None else torch.seed())
        device = next(model.parameters()).device
        ids = torch.tensor([job.prompt], dtype=torch.long, device=device)
        self.sink.send(job.id, job.start_event())
        with torch.inference_mode():
            model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=sampling.max_tokens,
                eos_token_id=sorted(self.eos_ids) or None,
                pad_token_id=self.pad_id,
                streamer=Streamer(),
                stopping_criteria=StoppingCriteriaList([Stop()]),
                **options,
            )
