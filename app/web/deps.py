"""Request dependencies: database session, the signed-in user, CSRF, and owned-object lookups
(404 when the object is missing *or* belongs to another workspace, so existence never leaks)."""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Iterator
from dataclasses import dataclass

from fastapi import Depends, HTTPException, Request
from sqlalchemy.orm import Session

from app.config import Settings, get_settings
from app.db import session_scope
from app.models import Adapter, Dataset, Job, User
from app.services.accounts import user_for_token
from app.services.artifacts import LocalArtifactStore, get_artifact_store

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"


@dataclass(frozen=True)
class Viewer:
    """Who is looking at a page, detached from any database session."""

    id: int
    email: str
    workspace_id: int
    is_admin: bool


class LoginRequired(Exception):
    """Raised when a request needs a signed-in user; pages redirect, the API answers 401."""


class CsrfFailed(Exception):
    """Raised when a cookie-authenticated form or request lacks a valid CSRF token."""


def get_db() -> Iterator[Session]:
    with session_scope() as session:
        yield session


def settings_dep() -> Settings:
    return get_settings()


def store_dep() -> LocalArtifactStore:
    return get_artifact_store()


def csrf_token(request: Request) -> str:
    """The session's CSRF token, created on first use."""
    token = request.session.get("csrf")
    if not token:
        token = secrets.token_urlsafe(32)
        request.session["csrf"] = token
    return token


def _bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def current_user(request: Request, db: Session = Depends(get_db)) -> User:
    """The signed-in user from a Bearer token or the session cookie; raises LoginRequired."""
    token = _bearer_token(request)
    if token is not None:
        user = user_for_token(db, token)
        request.state.auth_scheme = "bearer"
    else:
        user_id = request.session.get("user_id")
        user = db.get(User, user_id) if isinstance(user_id, int) else None
        request.state.auth_scheme = "session"
    if user is None:
        raise LoginRequired()
    # A plain snapshot for templates: error pages render after the session has been rolled back.
    request.state.user = Viewer(id=user.id, email=user.email, workspace_id=user.workspace_id, is_admin=user.is_admin)
    return user


async def verify_csrf(request: Request) -> None:
    """Unsafe requests authenticated by cookie must carry the session's CSRF token
    (a form field or the X-CSRF-Token header that htmx sends). Bearer requests are exempt:
    a browser never attaches them by itself."""
    if request.method in SAFE_METHODS or _bearer_token(request) is not None:
        return
    expected = request.session.get("csrf")
    sent = request.headers.get(CSRF_HEADER)
    if not sent and request.headers.get("content-type", "").startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        form = await request.form()
        value = form.get(CSRF_FIELD)
        sent = value if isinstance(value, str) else None
    if not expected or not sent or not hmac.compare_digest(expected, sent):
        raise CsrfFailed()


def dataset_in_workspace(db: Session, dataset_id, user: User) -> Dataset:
    """The dataset if it exists in the user's workspace, else 404 (ids come from paths, bodies or forms)."""
    try:
        dataset = db.get(Dataset, int(dataset_id))
    except (TypeError, ValueError):
        dataset = None
    if dataset is None or dataset.workspace_id != user.workspace_id:
        raise HTTPException(404, "There is no such dataset in your workspace.")
    return dataset


def owned_dataset(dataset_id: int, user: User = Depends(current_user), db: Session = Depends(get_db)) -> Dataset:
    return dataset_in_workspace(db, dataset_id, user)


def owned_job(job_id: int, user: User = Depends(current_user), db: Session = Depends(get_db)) -> Job:
    job = db.get(Job, job_id)
    if job is None or job.workspace_id != user.workspace_id:
        raise HTTPException(404, "There is no such job in your workspace.")
    return job


def owned_adapter(adapter_id: int, user: User = Depends(current_user), db: Session = Depends(get_db)) -> Adapter:
    adapter = db.get(Adapter, adapter_id)
    if adapter is None or adapter.workspace_id != user.workspace_id:
        raise HTTPException(404, "There is no such adapter in your workspace.")
    return adapter
