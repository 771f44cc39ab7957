"""The OpenAI-compatible endpoint: POST /v1/chat/completions, POST /v1/completions, GET /v1/models.
Bearer tokens with the `serve` scope; errors in OpenAI's body (app/openai_api/errors.py)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool

from app.config import get_settings
from app.db import session_scope
from app.openai_api.calls import Caller, authorize, run
from app.openai_api.errors import OpenAIError
from app.openai_api.schemas import ChatCompletionRequest, CompletionRequest
from app.services import serving

router = APIRouter(prefix="/v1", tags=["OpenAI-compatible serving"])


@router.post("/chat/completions")
async def chat_completions(request: Request):
    """Chat with an approved adapter (its model name) or a base model, in OpenAI's format; `stream` for server-sent chunks.
    The body (OpenAI's ChatCompletionRequest) is read by the route, so that bad parameters get OpenAI's 400 body."""
    return await run(request, "chat.completions", ChatCompletionRequest)


@router.post("/completions")
async def completions(request: Request):
    """Continue a plain-text prompt with an approved adapter or a base model."""
    return await run(request, "completions", CompletionRequest)


def _model_entry(model: serving.ServedModel) -> dict:
    return {"id": model.id, "object": "model", "created": model.created, "owned_by": "workspace" if model.kind == "adapter" else "tailor"}


def _models(caller: Caller) -> list[serving.ServedModel]:
    with session_scope() as db:
        return serving.served_models(db, get_settings(), caller.workspace_id)


@router.get("/models")
async def list_models(request: Request):
    """What the token's workspace may call: approved adapters by model name, then installed base models."""
    caller = await authorize(request)
    return {"object": "list", "data": [_model_entry(m) for m in await run_in_threadpool(_models, caller)]}


@router.get("/models/{model:path}")
async def retrieve_model(model: str, request: Request):
    caller = await authorize(request)
    for entry in await run_in_threadpool(_models, caller):
        if entry.id == model:
            return _model_entry(entry)
    raise OpenAIError(404, f"The model '{model}' does not exist in your workspace.", code="model_not_found", param="model")
