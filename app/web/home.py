"""Sign in, sign out and the dashboard."""

from __future__ import annotations

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse

from app.http import auditing
from app.http.deps import Csrf, CurrentUser, DbSession
from app.services import accounts, adapters, dataset_ingest, jobs
from app.web.templating import render

router = APIRouter(dependencies=[Csrf])


def _safe_next(target: str) -> str:
    """Only same-site paths: never redirect a person to another site after sign-in."""
    return target if target.startswith("/") and not target.startswith("//") else "/"


@router.get("/login")
def login_page(request: Request, next: str = "/"):
    return render(request, "login.html", {"next": _safe_next(next)})


@router.post("/login")
def login(request: Request, db: DbSession, email: str = Form(""), password: str = Form(""), next: str = Form("/")):
    user = accounts.authenticate(db, email, password)
    target = _safe_next(next)
    if user is None:
        auditing.record(request, db, None, "sign_in_failed", email=accounts.normalise_email(email)[:320])
        return render(
            request,
            "login.html",
            {"error": "That email and password do not match an account.", "email": email, "next": target},
            status_code=401,
        )
    request.session.clear()  # a fresh session (and CSRF token) at sign-in
    request.session["user_id"] = user.id
    auditing.record(request, db, user, "sign_in", ("user", user.id))
    return RedirectResponse(target, status_code=303)


@router.post("/logout")
def logout(request: Request):
    request.session.clear()
    return RedirectResponse("/login", status_code=303)


@router.get("/")
def dashboard(request: Request, user: CurrentUser, db: DbSession):
    return render(
        request,
        "dashboard.html",
        {
            "datasets": dataset_ingest.datasets_for(db, user.workspace_id),
            "jobs": jobs.jobs_for(db, user.workspace_id, limit=20),
            "adapters": adapters.adapters_for(db, user.workspace_id),
        },
    )
