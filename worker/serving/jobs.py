"""One request inside the engine: its prompt, sampling state, text so far and how it ends."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from app.services.serving_protocol import ServeEvent, ServeRequest
from worker.serving.prompts import Sampling
from worker.serving.text import IncrementalDecoder, StopText


@dataclass
class Job:
    request: ServeRequest
    raw: str  # the JSON as popped (pushed back to the queue if this engine stops before starting it)
    sampling: Sampling
    prompt: list[int]
    generator: Any  # torch.Generator
    decoder: IncrementalDecoder
    stop: StopText
    adapter: str = ""  # the loaded adapter's name, batch.BASE, or "" while unresolved
    completion_tokens: int = 0
    next_token: int = -1  # chosen, not yet fed to the model
    finished: bool = False
    popped_at: float = field(default_factory=time.monotonic)

    @property
    def id(self) -> str:
        return self.request.id

    def start_event(self) -> ServeEvent:
        return ServeEvent(type="start", prompt_tokens=len(self.prompt))

    def accept(self, token: int, eos_ids: set[int]) -> list[ServeEvent]:
        """Take one generated token; returns the events it produces (a text piece, the end)."""
        self.completion_tokens += 1
        self.next_token = token
        events: list[ServeEvent] = []
        if token in eos_ids:
            return self._finish(events, "stop")
        text, hit = self.stop.feed(self.decoder.push(token))
        if text:
            events.append(ServeEvent(type="token", text=text))
        if hit:
            return self._end(events, "stop")
        if self.completion_tokens >= self.sampling.max_tokens:
            return self._finish(events, "length")
        return events

    def _finish(self, events: list[ServeEvent], reason: str) -> list[ServeEvent]:
        """End of generation: release held-back text (unless it reaches a stop string)."""
        text, hit = self.stop.feed(self.decoder.flush())
        if not hit:
            text += self.stop.flush()
        if text:
            events.append(ServeEvent(type="token", text=text))
        return self._end(events, "stop" if hit else reason)

    def _end(self, events: list[ServeEvent], reason: str) -> list[ServeEvent]:
        self.finished = True
        events.append(
            ServeEvent(type="done", prompt_tokens=len(self.prompt), completion_tokens=self.completion_tokens, finish_reason=reason)
        )
        return events
