"""OpenAI's error body, {"error": {"message", "type", "param", "code"}}, for every /v1 answer that is not a success."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

# status -> OpenAI's error type
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "service_unavailable",
}


class OpenAIError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.param, self.headers = status, message, code, param, headers or {}

    def body(self) -> dict:
        return {
            "error": {"message": self.message, "type": ERROR_TYPES.get(self.status, "server_error"), "param": self.param, "code": self.code}
        }

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def bad_parameters(exc: ValidationError) -> OpenAIError:
    """Pydantic's complaints about a request body, as one OpenAI 400 naming the first parameter."""
    problems = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error.get("loc", ())) or "body"
        problems.append(f"{where}: {error.get('msg')}")
    first = exc.errors()[0].get("loc", ()) if exc.errors() else ()
    return OpenAIError(400, "Invalid request: " + "; ".join(problems), code="invalid_value", param=".".join(str(p) for p in first) or None)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(OpenAIError)
    async def openai_error(request: Request, exc: OpenAIError):
        return exc.response()

    @app.exception_handler(StarletteHTTPException)
    async def routing_error(request: Request, exc: StarletteHTTPException):
        """Starlette's own 404/405 (no such route, wrong method): OpenAI's body under /v1, FastAPI's elsewhere."""
        if request.url.path.startswith("/v1/"):
            message = "There is no such endpoint under /v1." if exc.status_code == 404 else str(exc.detail)
            return OpenAIError(exc.status_code, message).response()
        return await http_exception_handler(request, exc)
