"""What answers /v1 requests, behind one interface (`ServingBackend`): Tailor's own engine over
Redis (`builtin`, app/services/serving_protocol.py) or a vLLM OpenAI server (`vllm`, in
serving_vllm.py). Chosen by TAILOR_SERVING_BACKEND; the routes see only ServeEvents.

Every wait is bounded: the first event within `start_timeout`, each next one within `idle_timeout`;
past either, EngineUnavailable (a 503 with a plain message), never a hang."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Protocol

from app.config import Settings
from app.services import serving_protocol as protocol
from app.services.serving import ServeTarget
from app.services.serving_limits import async_redis
from app.services.serving_protocol import ServeEvent, ServeRequest


class EngineUnavailable(Exception):
    """No engine answers (none running, stopped answering, unreachable); the message is for the caller."""


class ServingBackend(Protocol):
    name: str

    async def health(self, target: ServeTarget) -> str | None:
        """None when an engine can take the request now; else a plain sentence saying why not."""

    async def list_loaded(self, base_model: str) -> list[str]:
        """What is up for this base model: engine names (builtin) or the served models (vLLM)."""

    def stream(self, request: ServeRequest, target: ServeTarget, *, start_timeout: float, idle_timeout: float) -> AsyncIterator[ServeEvent]:
        """Submit the request and yield its events: start, token…, then done or error."""

    async def cancel(self, request_id: str) -> None:
        """The client went away: stop decoding this request."""


def no_engine_message(base_model: str) -> str:
    return (
        f"No serving engine is running for the base model '{base_model}'. "
        f"Start one with `tailor engine --base-model {base_model}`, or ask your administrator."
    )


class BuiltinBackend:
    """Tailor's engine processes (`tailor engine`): requests on a Redis list per base model, events on a Redis stream per request."""

    name = "builtin"

    async def health(self, target: ServeTarget) -> str | None:
        return None if await self.list_loaded(target.base_model) else no_engine_message(target.base_model)

    async def list_loaded(self, base_model: str) -> list[str]:
        fresh_since = time.time() - protocol.ENGINE_STALE_SECONDS
        return list(await async_redis().zrangebyscore(protocol.engines_key(base_model), fresh_since, "+inf"))

    async def submit(self, request: ServeRequest) -> None:
        await async_redis().rpush(protocol.queue_key(request.base_model), request.to_json())

    async def events(self, request_id: str, *, start_timeout: float, idle_timeout: float) -> AsyncIterator[ServeEvent]:
        client = async_redis()
        key, last, started = protocol.events_key(request_id), "0", False
        while True:
            wait = idle_timeout if started else start_timeout
            deadline = time.monotonic() + wait
            entries: list = []
            while not entries:
                left_ms = int((deadline - time.monotonic()) * 1000)
                if left_ms <= 0:
                    raise EngineUnavailable(
                        "The serving engine stopped answering; try again in a moment."
                        if started
                        else "No serving engine took the request in time; the engines may be busy or stopped. Try again in a moment."
                    )
                entries = await client.xread({key: last}, count=200, block=min(left_ms, 1000))
            for _, items in entries:
                for event_id, fields in items:
                    last = event_id
                    event = ServeEvent.from_fields(fields)
                    started = True
                    yield event
                    if event.type in ("done", "error"):
                        return

    async def stream(
        self, request: ServeRequest, target: ServeTarget, *, start_timeout: float, idle_timeout: float
    ) -> AsyncIterator[ServeEvent]:
        await self.submit(request)
        async for event in self.events(request.id, start_timeout=start_timeout, idle_timeout=idle_timeout):
            yield event

    async def cancel(self, request_id: str) -> None:
        await async_redis().set(protocol.cancel_key(request_id), "1", ex=protocol.EVENTS_TTL_SECONDS)


def _vllm(settings: Settings) -> ServingBackend:
    from app.services.serving_vllm import VllmBackend

    return VllmBackend(settings)


BACKENDS: dict[str, Callable[[Settings], ServingBackend]] = {
    "builtin": lambda settings: BuiltinBackend(),
    "vllm": _vllm,
}


def get_backend(settings: Settings) -> ServingBackend:
    try:
        return BACKENDS[settings.serving_backend](settings)
    except KeyError:
        raise EngineUnavailable(f"TAILOR_SERVING_BACKEND is {settings.serving_backend!r}; it is one of: {', '.join(BACKENDS)}.") from None
