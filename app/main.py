"""create_app(): routers, static files, templates, sessions and error pages."""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.middleware.sessions import SessionMiddleware

from app.api import ROUTERS as API_ROUTERS
from app.config import get_settings
from app.http.auth import CsrfFailed, LoginRequired, ScopeMissing
from app.http.body_limit import BodyLimitMiddleware
from app.http.deps import Authorized, SignedIn
from app.http.nul_middleware import NulTextMiddleware
from app.http.security_headers import SECURITY_HEADERS, SecurityHeadersMiddleware
from app.openai_api import ROUTERS as OPENAI_ROUTERS
from app.openai_api import install_error_handlers as install_openai_error_handlers
from app.openai_api.errors import OpenAIError
from app.services.quotas import QuotaExceeded
from app.web import ROUTERS as PAGE_ROUTERS
from app.web.templating import render

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
log = logging.getLogger("tailor.web")


def _wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api/") or request.url.path == "/openapi.json"


def create_app() -> FastAPI:
    settings = get_settings()
    app = FastAPI(
        title="Tailor",
        version="0.1.0",
        description="Fine-tune open language models on your own data.",
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        # Every route's access rule (app/http/access.py), checked before the route runs.
        dependencies=[Authorized],
    )
    app.add_middleware(
        SessionMiddleware,
        secret_key=settings.session_secret(),
        session_cookie="tailor_session",
        max_age=settings.session_max_age_seconds,
        same_site="lax",
        https_only=settings.environment != "development",
    )
    # Added last = run first: a body over the limit is refused before sessions, sign-in or routing,
    # and every answer (the refusal included) carries the security headers. Inside the body limit,
    # text with a NUL character is refused wherever it is in a request (app/http/nul_text.py).
    app.add_middleware(NulTextMiddleware)
    app.add_middleware(BodyLimitMiddleware)
    app.add_middleware(SecurityHeadersMiddleware)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    for router in (*PAGE_ROUTERS, *API_ROUTERS, *OPENAI_ROUTERS):
        app.include_router(router)
    install_openai_error_handlers(app)

    @app.get("/health", include_in_schema=False)
    def health():
        """Liveness and readiness for load balancers: the web is up and reaches its database."""
        from sqlalchemy import text

        from app.db import get_engine

        try:
            with get_engine().connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception:  # noqa: BLE001
            return JSONResponse({"status": "degraded", "database": "unreachable"}, status_code=503)
        return {"status": "ok", "database": "ok"}

    @app.get("/openapi.json", include_in_schema=False, dependencies=[SignedIn])
    def openapi():
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False, dependencies=[SignedIn])
    def docs(request: Request):
        """Swagger UI, vendored in static/vendor and started by static/swagger-init.js (FastAPI's
        get_swagger_ui_html writes an inline script, which the Content-Security-Policy refuses)."""
        return render(request, "docs.html")

    @app.exception_handler(LoginRequired)
    async def login_required(request: Request, _exc: LoginRequired):
        if _wants_json(request):
            return JSONResponse(
                {"detail": "Sign in first: send 'Authorization: Bearer <token>' (create one with `tailor create-token EMAIL`)."},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        if request.headers.get("HX-Request") == "true":
            return JSONResponse({"detail": "Your session ended; sign in again."}, status_code=401, headers={"HX-Redirect": "/login"})
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={target}", status_code=303)

    @app.exception_handler(CsrfFailed)
    async def csrf_failed(request: Request, _exc: CsrfFailed):
        message = "This form has expired or did not come from Tailor. Reload the page and try again."
        if _wants_json(request):
            return JSONResponse({"detail": message}, status_code=403)
        return render(request, "error.html", {"status": 403, "message": message}, status_code=403)

    @app.exception_handler(ScopeMissing)
    async def scope_missing(request: Request, exc: ScopeMissing):
        message = f"This API token lacks the '{exc}' scope. Create a token with it on the tokens page (/settings/tokens)."
        if _wants_json(request):
            return JSONResponse({"detail": message}, status_code=403)
        return render(request, "error.html", {"status": 403, "message": message}, status_code=403)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        if request.url.path.startswith("/v1/"):  # OpenAI clients read OpenAI's error body
            detail = exc.detail if isinstance(exc.detail, str) else "The request could not be completed."
            return OpenAIError(exc.status_code, "There is no such endpoint under /v1." if exc.status_code == 404 else detail).response()
        if _wants_json(request):
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)
        message = exc.detail if isinstance(exc.detail, str) else "The request could not be completed."
        if exc.status_code == 404 and message == "Not Found":
            message = "There is no page at this address."
        return render(request, "error.html", {"status": exc.status_code, "message": message}, status_code=exc.status_code)

    @app.exception_handler(QuotaExceeded)
    async def quota_exceeded(request: Request, exc: QuotaExceeded):
        """Over a workspace quota (app/services/quotas.py): a plain refusal naming the limit; 429 with Retry-After for rates."""
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
        if _wants_json(request):
            return JSONResponse({"detail": str(exc), "limit": exc.limit}, status_code=exc.status, headers=headers)
        return render(request, "error.html", {"status": exc.status, "message": str(exc)}, status_code=exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        problems = [f"{'.'.join(str(p) for p in e.get('loc', [])[1:]) or 'request'}: {e.get('msg')}" for e in exc.errors()]
        message = "The request is missing something or has a wrong value: " + "; ".join(problems)
        if _wants_json(request):
            return JSONResponse({"detail": message}, status_code=422)
        return render(request, "error.html", {"status": 422, "message": message}, status_code=422)

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception):
        log.exception("Unhandled error on %s %s", request.method, request.url.path)
        message = "Something went wrong on our side. The error has been logged; try again, and tell your administrator if it persists."
        # This handler answers outside the middleware stack, so it adds the security headers itself.
        if _wants_json(request):
            return JSONResponse({"detail": message}, status_code=500, headers=SECURITY_HEADERS)
        return render(request, "error.html", {"status": 500, "message": message}, status_code=500, headers=SECURITY_HEADERS)

    return app


app = create_app()
