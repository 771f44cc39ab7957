"""A ServeRequest into prompt token ids, or a ServeError with the status the caller gets.

Chat `messages` are rendered with the base model's chat template exactly as training renders a
prompt (worker.training.data.render_prompt: apply_chat_template with the generation prompt, no
extra special tokens); a tokenizer without a template gets the plain prompt format of training
(the last user turn, with the system turn and earlier turns as its context). A plain `prompt` is
tokenized as is, with the tokenizer's usual special tokens (e.g. a BOS), as text jobs train."""

from __future__ import annotations

from dataclasses import dataclass

from app.domain.task_kinds import render_plain_prompt
from app.services.serving_protocol import ServeEvent, ServeRequest
from worker.training.data import has_chat_template

ROLES = {"system", "user", "assistant", "developer", "tool"}


class ServeError(Exception):
    """A request answered with an error event (an HTTP status, OpenAI's code, a plain message)."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def event(self) -> ServeEvent:
        return ServeEvent(type="error", status=self.status, code=self.code, message=self.message)


def bad_request(message: str, code: str = "invalid_request_error") -> ServeError:
    return ServeError(400, code, message)


def context_length(model, tokenizer) -> int:
    """The longest sequence the model takes: its position table (or the tokenizer's limit, if smaller)."""
    limit = int(getattr(model.config, "max_position_embeddings", 0) or 0) or 2048
    tokenizer_limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(tokenizer_limit, int) and 0 < tokenizer_limit < limit:
        limit = tokenizer_limit
    return limit


def _check_messages(messages: object) -> list[dict[str, str]]:
    if not isinstance(messages, list) or not messages:
        raise bad_request("`messages` must be a non-empty list of {role, content} objects.")
    for message in messages:
        if not isinstance(message, dict) or not isinstance(message.get("content"), str) or message.get("role") not in ROLES:
            raise bad_request("Each message needs a `role` (system, user or assistant) and a text `content`.")
    return messages


def _plain_chat(messages: list[dict[str, str]]) -> str:
    users = [i for i, m in enumerate(messages) if m["role"] == "user"]
    if not users:
        raise bad_request("`messages` needs at least one user message.")
    last = users[-1]
    context = [m["content"] for m in messages[:last] if m["role"] in ("system", "developer")]
    context += [f"{m['role']}: {m['content']}" for m in messages[:last] if m["role"] not in ("system", "developer")]
    return render_plain_prompt(messages[last]["content"], "\n".join(context) or None)


def prompt_ids(tokenizer, request: ServeRequest) -> list[int]:
    if (request.messages is None) == (request.prompt is None):
        raise bad_request("Send exactly one of `messages` (chat) or `prompt` (plain text).")
    if request.messages is not None:
        messages = _check_messages(request.messages)
        if has_chat_template(tokenizer):
            text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        else:
            text = _plain_chat(messages)
        return list(tokenizer(text, add_special_tokens=not has_chat_template(tokenizer))["input_ids"])
    if not isinstance(request.prompt, str):
        raise bad_request("`prompt` must be a string.")
    return list(tokenizer(request.prompt, add_special_tokens=True)["input_ids"])


@dataclass(frozen=True)
class Sampling:
    max_tokens: int
    temperature: float
    top_p: float
    stop: list[str]
    seed: int | None


def check_sampling(request: ServeRequest) -> Sampling:
    if not isinstance(request.max_tokens, int) or request.max_tokens < 1:
        raise bad_request("`max_tokens` must be a whole number of at least 1.")
    try:
        temperature, top_p = float(request.temperature), float(request.top_p)
    except (TypeError, ValueError):
        raise bad_request("`temperature` and `top_p` must be numbers.") from None
    if not 0.0 <= temperature <= 2.0:
        raise bad_request("`temperature` must be between 0 and 2.")
    if not 0.0 < top_p <= 1.0:
        raise bad_request("`top_p` must be greater than 0 and at most 1.")
    stop = request.stop
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop) or len(stop) > 4:
        raise bad_request("`stop` must be a string or a list of at most 4 strings.")
    if request.seed is not None and not isinstance(request.seed, int):
        raise bad_request("`seed` must be an integer.")
    return Sampling(request.max_tokens, temperature, top_p, [s for s in stop if s], request.seed)


def check_context(prompt_tokens: int, max_tokens: int, limit: int) -> None:
    if prompt_tokens + max_tokens > limit:
        raise ServeError(
            400,
            "context_length_exceeded",
            f"This model's maximum context length is {limit} tokens; the prompt has {prompt_tokens} tokens "
            f"and max_tokens asks for {max_tokens} more. Shorten the prompt or lower max_tokens.",
        )
