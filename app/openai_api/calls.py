"""One /v1 call from body to answer: authenticate (a token with the `serve` scope), validate, resolve
the model in the token's workspace, apply the token's limits, hand the request to the serving
backend, and answer in OpenAI's format, whole or as server-sent chunks. Usage is recorded for every
call that got past authentication; the request log for adapters that keep one.

Asynchronous throughout: events are read with redis.asyncio (or httpx for vLLM) in an async
generator, no thread per stream; the database is touched in short threadpool calls before and after."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import anyio
from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError

from app.config import Settings, get_settings
from app.db import session_scope
from app.http.auth import bearer_token
from app.http.nul_text import NulInText
from app.openai_api.errors import OpenAIError, bad_parameters
from app.openai_api.schemas import ChatCompletionRequest, CompletionRequest, SamplingRequest
from app.services import quotas, request_log, serving, serving_limits, serving_usage, stream_leases
from app.services.accounts import token_for_secret
from app.services.serving import ModelNotFound, ServeTarget
from app.services.serving_backends import EngineUnavailable, ServingBackend, get_backend
from app.services.serving_protocol import ServeEvent, ServeRequest

DEFAULT_MAX_TOKENS = 256


@dataclass(frozen=True)
class Caller:
    token_id: int
    user_id: int
    workspace_id: int


def _authorize(secret: str) -> Caller:
    with session_scope() as db:
        row = token_for_secret(db, secret)
        if row is None:
            raise OpenAIError(
                401, "The API token is invalid, expired or revoked. Create a new one on the tokens page.", code="invalid_api_key"
            )
        if "serve" not in row.scopes.split():
            raise OpenAIError(
                401, "This API token lacks the 'serve' scope: create a token with it on the tokens page.", code="insufficient_scope"
            )
        return Caller(token_id=row.id, user_id=row.user_id, workspace_id=row.user.workspace_id)


async def authorize(request: Request) -> Caller:
    secret = bearer_token(request)
    if secret is None:
        raise OpenAIError(
            401, "Send your API token as 'Authorization: Bearer <token>' (create one on the tokens page).", code="invalid_api_key"
        )
    return await run_in_threadpool(_authorize, secret)


def _count_workspace_request(settings: Settings, caller: Caller) -> None:
    with session_scope() as db:
        quotas.check_request_quota(db, caller.workspace_id, settings)


def _resolve(settings: Settings, caller: Caller, model: str) -> ServeTarget:
    with session_scope() as db:
        return serving.resolve_model(db, settings, caller.workspace_id, model)


async def read_json(request: Request) -> Any:
    """The body as JSON; its size is already bounded by TAILOR_MAX_BODY_BYTES (app/http/body_limit.py)
    and its text holds no NUL characters (app/http/nul_text.py: a 400 naming the parameter)."""
    try:
        body = await request.body()
    except NulInText as exc:
        raise OpenAIError(400, str(exc.detail), code="invalid_value", param=exc.field) from None
    try:
        return json.loads(body)
    except ValueError:
        raise OpenAIError(400, "The request body is not valid JSON.", code="invalid_json") from None


@dataclass
class Outcome:
    """What one call did, for the usage row, the limits and the request log."""

    status: int = 200
    prompt_tokens: int = 0
    completion_tokens: int = 0
    first_token_ms: int | None = None
    finish_reason: str = "stop"
    text: list[str] = field(default_factory=list)
    finished: bool = False


class Call:
    """One validated request on its way through the backend."""

    def __init__(self, settings: Settings, caller: Caller, endpoint: str, body: SamplingRequest, started: float):
        self.settings, self.caller, self.endpoint, self.body, self.started = settings, caller, endpoint, body, started
        self.id = uuid.uuid4().hex
        self.created = int(time.time())
        self.target: ServeTarget | None = None
        self.outcome = Outcome()

    def usage_record(self) -> serving_usage.UsageRecord:
        target = self.target
        return serving_usage.UsageRecord(
            workspace_id=self.caller.workspace_id,
            token_id=self.caller.token_id,
            adapter_id=target.adapter_id if target else None,
            model=self.body.model[:300],
            base_model=target.base_model if target else "",
            endpoint=self.endpoint,
            status=self.outcome.status,
            prompt_tokens=self.outcome.prompt_tokens,
            completion_tokens=self.outcome.completion_tokens,
            latency_ms=int((time.monotonic() - self.started) * 1000),
            first_token_ms=self.outcome.first_token_ms,
            streamed=self.body.stream,
        )

    def _write_records(self) -> None:
        with session_scope() as db:
            serving_usage.record_usage(db, self.usage_record())
            target = self.target
            if target is not None and target.request_log and target.adapter_id is not None and self.outcome.status == 200:
                body = self.body
                messages = (
                    [{"role": m.role, "content": m.text()} for m in body.messages] if isinstance(body, ChatCompletionRequest) else None
                )
                prompt = body.prompt if isinstance(body, CompletionRequest) else None
                request_log.record(
                    db,
                    self.caller.workspace_id,
                    target.adapter_id,
                    target.request_log_retention_days,
                    request_log.prompt_text(messages, prompt if isinstance(prompt, str) else None),
                    "".join(self.outcome.text),
                )

    async def finish(self) -> None:
        """Record the call (shielded: a client that went away does not cancel the bookkeeping)."""
        with anyio.CancelScope(shield=True):
            used = self.outcome.prompt_tokens + self.outcome.completion_tokens
            try:
                await serving_limits.record_tokens(self.settings, self.caller.token_id, used)
            finally:
                await run_in_threadpool(self._write_records)

    async def fail(self, error: OpenAIError) -> OpenAIError:
        self.outcome.status = error.status
        await self.finish()
        return error

    def serve_request(self) -> ServeRequest:
        body, target = self.body, self.target
        assert target is not None
        requested = body.requested_max_tokens()
        common: dict[str, Any] = {
            "id": self.id,
            "base_model": target.base_model,
            "adapter": target.adapter,
            "max_tokens": requested or min(DEFAULT_MAX_TOKENS, self.settings.serve_max_tokens),
            "temperature": body.temperature,
            "top_p": body.top_p,
            "stop": body.stops(),
            "seed": body.seed,
            "deadline": time.time() + self.settings.serve_start_timeout_seconds,
        }
        if isinstance(body, ChatCompletionRequest):
            return ServeRequest(messages=[{"role": m.role, "content": m.text()} for m in body.messages], **common)
        assert isinstance(body, CompletionRequest) and isinstance(body.prompt, str)
        return ServeRequest(prompt=body.prompt, **common)

    def on_event(self, event: ServeEvent) -> None:
        outcome = self.outcome
        if event.type == "start":
            outcome.prompt_tokens = event.prompt_tokens or outcome.prompt_tokens
        elif event.type == "token":
            if outcome.first_token_ms is None:
                outcome.first_token_ms = int((time.monotonic() - self.started) * 1000)
            outcome.text.append(event.text)
            outcome.completion_tokens += 1  # replaced by the engine's count at `done`
        elif event.type == "done":
            outcome.prompt_tokens = event.prompt_tokens or outcome.prompt_tokens
            outcome.completion_tokens = event.completion_tokens or outcome.completion_tokens
            outcome.finish_reason = event.finish_reason or "stop"
            outcome.finished = True

    def usage_body(self) -> dict[str, int]:
        o = self.outcome
        return {
            "prompt_tokens": o.prompt_tokens,
            "completion_tokens": o.completion_tokens,
            "total_tokens": o.prompt_tokens + o.completion_tokens,
        }


def _error_from_event(event: ServeEvent) -> OpenAIError:
    return OpenAIError(event.status or 500, event.message or "The serving engine failed on this request.", code=event.code or None)


async def run(request: Request, endpoint: str, schema: type[SamplingRequest]) -> Response:
    started = time.monotonic()
    settings = get_settings()
    caller = await authorize(request)
    raw = await read_json(request)
    try:
        body = schema.model_validate(raw)
    except ValidationError as exc:
        raise bad_parameters(exc) from None
    call = Call(settings, caller, endpoint, body, started)
    requested = body.requested_max_tokens()
    if requested is not None and requested > settings.serve_max_tokens:
        raise await call.fail(
            OpenAIError(400, f"max_tokens is at most {settings.serve_max_tokens} on this server.", code="invalid_value", param="max_tokens")
        )
    try:
        call.target = await run_in_threadpool(_resolve, settings, caller, body.model)
    except ModelNotFound as exc:
        raise await call.fail(OpenAIError(404, str(exc), code="model_not_found", param="model")) from None
    try:
        await serving_limits.check_request(settings, caller.token_id)
        await run_in_threadpool(_count_workspace_request, settings, caller)  # the workspace's quota (app/services/quotas.py)
    except (serving_limits.LimitExceeded, quotas.RateLimited) as exc:
        raise await call.fail(
            OpenAIError(429, str(exc), code="rate_limit_exceeded", headers={"Retry-After": str(exc.retry_after)})
        ) from None
    try:
        backend = get_backend(settings)
        reason = await backend.health(call.target)
    except EngineUnavailable as exc:
        reason = str(exc)
    if reason is not None:
        raise await call.fail(OpenAIError(503, reason, code="engine_unavailable"))
    lease = None
    if body.stream:
        try:
            lease = await serving_limits.open_stream(settings, caller.token_id)
        except serving_limits.LimitExceeded as exc:
            raise await call.fail(
                OpenAIError(429, str(exc), code="too_many_streams", headers={"Retry-After": str(exc.retry_after)})
            ) from None
    serve_request = call.serve_request()
    events = backend.stream(
        serve_request, call.target, start_timeout=settings.serve_start_timeout_seconds, idle_timeout=settings.serve_idle_timeout_seconds
    )
    if lease is not None:  # a stream renews its slot's lease while it waits for the engine and while it runs
        events = lease.renewing(events)
    try:
        first = await anext(events)
    except (EngineUnavailable, StopAsyncIteration) as exc:
        await _abandon(backend, serve_request.id, events, lease)
        message = str(exc) or "The serving engine ended the request without an answer."
        raise await call.fail(OpenAIError(503, message, code="engine_unavailable")) from None
    if first.type == "error":
        await _abandon(backend, serve_request.id, events, lease)
        raise await call.fail(_error_from_event(first))
    call.on_event(first)
    if body.stream:
        assert lease is not None
        return StreamingResponse(
            stream_chunks(call, backend, events, first, lease),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )
    return await whole_answer(call, backend, events)


async def _abandon(backend: ServingBackend, request_id: str, events, lease: stream_leases.Lease | None) -> None:
    with anyio.CancelScope(shield=True):
        await backend.cancel(request_id)
        await events.aclose()
        if lease is not None:
            await lease.release()


async def whole_answer(call: Call, backend: ServingBackend, events) -> Response:
    try:
        async for event in events:
            if event.type == "error":
                raise _error_from_event(event)
            call.on_event(event)
    except EngineUnavailable as exc:
        await _abandon(backend, call.id, events, None)
        raise await call.fail(OpenAIError(503, str(exc), code="engine_unavailable")) from None
    except OpenAIError as exc:
        raise await call.fail(exc) from None
    await call.finish()
    return JSONResponse(answer_body(call))


def answer_body(call: Call) -> dict:
    text, finish = "".join(call.outcome.text), call.outcome.finish_reason
    if call.endpoint == "chat.completions":
        choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None, "finish_reason": finish}
        return {
            "id": f"chatcmpl-{call.id}",
            "object": "chat.completion",
            "created": call.created,
            "model": call.body.model,
            "system_fingerprint": None,
            "choices": [choice],
            "usage": call.usage_body(),
        }
    return {
        "id": f"cmpl-{call.id}",
        "object": "text_completion",
        "created": call.created,
        "model": call.body.model,
        "system_fingerprint": None,
        "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}],
        "usage": call.usage_body(),
    }


def _chunk(call: Call, piece: str | None, finish: str | None, *, role: bool = False) -> str:
    if call.endpoint == "chat.completions":
        delta: dict[str, Any] = {}
        if role:
            delta["role"] = "assistant"
        if piece is not None:
            delta["content"] = piece
        choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        data = {"id": f"chatcmpl-{call.id}", "object": "chat.completion.chunk", "created": call.created, "model": call.body.model}
    else:
        choice = {"index": 0, "text": piece or "", "logprobs": None, "finish_reason": finish}
        data = {"id": f"cmpl-{call.id}", "object": "text_completion", "created": call.created, "model": call.body.model}
    data.update(system_fingerprint=None, choices=[choice])
    return f"data: {json.dumps(data)}\n\n"


def _usage_chunk(call: Call) -> str:
    obj = "chat.completion.chunk" if call.endpoint == "chat.completions" else "text_completion"
    prefix = "chatcmpl" if call.endpoint == "chat.completions" else "cmpl"
    data = {
        "id": f"{prefix}-{call.id}",
        "object": obj,
        "created": call.created,
        "model": call.body.model,
        "choices": [],
        "usage": call.usage_body(),
    }
    return f"data: {json.dumps(data)}\n\n"


async def stream_chunks(call: Call, backend: ServingBackend, events, first: ServeEvent, lease: stream_leases.Lease):
    """OpenAI's chunks as the engine decodes, then `data: [DONE]`. When the client goes away the
    engine is told to stop (the cancel key) and the call is recorded as status 499; either way the
    stream's lease is released (and, were this process killed, would run out by itself)."""
    include_usage = bool(call.body.stream_options and call.body.stream_options.include_usage)
    try:
        if call.endpoint == "chat.completions":
            yield _chunk(call, "", None, role=True)
        if first.type == "token":
            yield _chunk(call, first.text, None)
        try:
            async for event in events:
                call.on_event(event)
                if event.type == "token":
                    yield _chunk(call, event.text, None)
                elif event.type == "error":
                    call.outcome.status = event.status or 500
                    yield f"data: {json.dumps(_error_from_event(event).body())}\n\n"
                    break
                elif event.type == "done":
                    yield _chunk(call, None if call.endpoint == "chat.completions" else "", call.outcome.finish_reason)
                    if include_usage:
                        yield _usage_chunk(call)
        except EngineUnavailable as exc:
            call.outcome.status = 503
            yield f"data: {json.dumps(OpenAIError(503, str(exc), code='engine_unavailable').body())}\n\n"
        yield "data: [DONE]\n\n"
    finally:
        with anyio.CancelScope(shield=True):
            if not call.outcome.finished and call.outcome.status == 200:
                call.outcome.status = 499  # the client closed the stream before the answer was done
            if not call.outcome.finished:
                await backend.cancel(call.id)
            await events.aclose()
            await lease.release()
        await call.finish()
