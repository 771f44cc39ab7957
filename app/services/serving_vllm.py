"""The vLLM backend: /v1 requests relayed to a vLLM OpenAI server (started with `--enable-lora` and
VLLM_ALLOW_RUNTIME_LORA_UPDATING=True) with httpx, Tailor's auth, scoping, limits and usage in front.

An approved adapter is registered with vLLM on its first request through vLLM's dynamic LoRA loading
(`POST /v1/load_lora_adapter` with a name and the adapter's folder, which the vLLM server must be able
to read: the same disk or a shared one), under a name that changes with the adapter's files; a base
model is called by its public name (start vLLM with that model or `--served-model-name`).

vLLM does not run on these CPU machines: the translation of vLLM's chunks into ServeEvents is
tested with chunks in vLLM's documented format; nothing here was run against a real vLLM server."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from typing import Any

import httpx

from app.config import Settings
from app.services.artifacts import get_artifact_store
from app.services.serving import ServeTarget
from app.services.serving_backends import EngineUnavailable
from app.services.serving_protocol import ServeEvent, ServeRequest


def lora_name(target: ServeTarget) -> str:
    assert target.adapter is not None
    return f"tailor-{target.adapter.id}-{target.adapter.version}"


def vllm_body(request: ServeRequest, target: ServeTarget) -> tuple[str, dict[str, Any]]:
    """The vLLM endpoint and body for a request (always streamed, with usage in the last chunk)."""
    body: dict[str, Any] = {
        "model": lora_name(target) if target.adapter else target.base_public_name,
        "max_tokens": request.max_tokens,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if request.stop:
        body["stop"] = request.stop
    if request.seed is not None:
        body["seed"] = request.seed
    if request.messages is not None:
        return "/v1/chat/completions", {**body, "messages": request.messages}
    return "/v1/completions", {**body, "prompt": request.prompt or ""}


class ChunkReader:
    """vLLM's server-sent chunks (chat or completion), line by line, as ServeEvents: start, token…, done."""

    def __init__(self) -> None:
        self.started = False
        self.ended = False
        self.finish = ""
        self.usage: dict[str, Any] = {}

    def feed(self, line: str) -> list[ServeEvent]:
        if self.ended or not line.startswith("data:"):
            return []
        data = line[len("data:") :].strip()
        if data == "[DONE]":
            return [self.done()]
        chunk = json.loads(data)
        if "error" in chunk:
            error = chunk["error"] if isinstance(chunk["error"], dict) else {"message": str(chunk["error"])}
            self.ended = True
            return [ServeEvent(type="error", status=500, message=str(error.get("message") or "The vLLM server failed."))]
        events = []
        if not self.started:
            self.started = True
            events.append(ServeEvent(type="start"))
        self.usage = chunk.get("usage") or self.usage
        for choice in chunk.get("choices") or []:
            piece = (choice.get("delta") or {}).get("content") if "delta" in choice else choice.get("text")
            if piece:
                events.append(ServeEvent(type="token", text=piece))
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]
        return events

    def done(self) -> ServeEvent:
        self.ended = True
        return ServeEvent(
            type="done",
            prompt_tokens=int(self.usage.get("prompt_tokens") or 0),
            completion_tokens=int(self.usage.get("completion_tokens") or 0),
            finish_reason="length" if self.finish == "length" else "stop",
        )


def events_from_sse(lines: Iterable[str]) -> list[ServeEvent]:
    """All events of a finished stream (the ChunkReader's output, for tests and logs)."""
    reader = ChunkReader()
    events = [event for line in lines for event in reader.feed(line)]
    return events if reader.ended else [*events, reader.done()]


class VllmBackend:
    name = "vllm"

    def __init__(self, settings: Settings):
        self.base_url = settings.vllm_url.rstrip("/")

    async def health(self, target: ServeTarget) -> str | None:
        try:
            async with httpx.AsyncClient(timeout=3) as client:
                response = await client.get(self.base_url + "/health")
        except httpx.HTTPError:
            return f"The vLLM server at {self.base_url} is not reachable; start it, or ask your administrator."
        return None if response.status_code == 200 else f"The vLLM server at {self.base_url} is not ready (HTTP {response.status_code})."

    async def list_loaded(self, base_model: str) -> list[str]:
        async with httpx.AsyncClient(timeout=5) as client:
            response = await client.get(self.base_url + "/v1/models")
        return [m["id"] for m in response.json().get("data", [])] if response.status_code == 200 else []

    async def register(self, client: httpx.AsyncClient, target: ServeTarget) -> None:
        """Load the adapter into vLLM (dynamic LoRA loading) under its versioned name."""
        assert target.adapter is not None
        path = str(get_artifact_store().path(target.adapter.storage_key))
        response = await client.post(self.base_url + "/v1/load_lora_adapter", json={"lora_name": lora_name(target), "lora_path": path})
        if response.status_code >= 400 and "already" not in response.text.lower():
            raise EngineUnavailable(f"The vLLM server refused to load the adapter: {response.text[:300]}")

    async def stream(
        self, request: ServeRequest, target: ServeTarget, *, start_timeout: float, idle_timeout: float
    ) -> AsyncIterator[ServeEvent]:
        path, body = vllm_body(request, target)
        timeout = httpx.Timeout(connect=start_timeout, read=max(start_timeout, idle_timeout), write=start_timeout, pool=start_timeout)
        try:
            async with httpx.AsyncClient(timeout=timeout) as client:
                for attempt in range(2):
                    async with client.stream("POST", self.base_url + path, json=body) as response:
                        if response.status_code == 404 and target.adapter is not None and attempt == 0:
                            await response.aread()
                            await self.register(client, target)  # first request for this adapter (or vLLM restarted)
                            continue
                        if response.status_code >= 400:
                            text = (await response.aread()).decode(errors="replace")
                            status = 400 if response.status_code == 400 else 503
                            yield ServeEvent(type="error", status=status, message=_vllm_message(text))
                            return
                        reader = ChunkReader()
                        async for line in response.aiter_lines():
                            for event in reader.feed(line):
                                yield event
                            if reader.ended:
                                return
                        yield reader.done()
                        return
        except httpx.HTTPError as exc:
            raise EngineUnavailable(f"The vLLM server at {self.base_url} did not answer: {type(exc).__name__}.") from None

    async def cancel(self, request_id: str) -> None:
        """Closing the relayed HTTP stream (the route's generator ends) makes vLLM abort the request."""


def _vllm_message(text: str) -> str:
    try:
        data = json.loads(text)
        return str((data.get("error") or {}).get("message") or data.get("message") or text)[:500]
    except (ValueError, AttributeError):
        return text[:500] or "The vLLM server refused the request."
