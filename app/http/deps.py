"""Request dependencies and their `Annotated` aliases, for routes of pages and API alike:
`db: DbSession`, `user: CurrentUser`, `settings: AppSettings`, `store: Store`, and the owned
objects `OwnedDataset`, `OwnedJob`, `OwnedAdapter`, `WorkspaceMember` (404 when missing *or* in another
workspace, so existence never leaks). `SignedIn` and `Csrf` are the sign-in and CSRF checks as
router dependencies; `Authorized` the app-wide check of the access rules (app/http/access.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from sqlalchemy.orm import Session

from app.config import Settings, get_settings
from app.db import WEB_SESSIONS, session_scope
from app.domain.roles import ADMIN, allows
from app.http.access import PUBLIC, rule_for
from app.http.auth import require_token_scope, signed_in_user, verify_csrf
from app.http.lookups import adapter_in_workspace, dataset_in_workspace, job_in_workspace, member_in_workspace_or_404
from app.models import Adapter, Dataset, Job, User
from app.services.artifacts import ArtifactStore, get_artifact_store


def get_db() -> Iterator[Session]:
    """The request's session: the boundary that commits (routes and services never do), or rolls back on an error."""
    with session_scope() as session:
        yield session


def settings_dep() -> Settings:
    return get_settings()


def store_dep() -> ArtifactStore:
    return get_artifact_store()


# Function scope: the request boundary commits when the route returns, before the response is sent
# (a failed commit is then an error answer, not a lost write after a 200), and wake-ups registered
# with app.services.wakeups go out right after that commit.
# max_concurrency: requests beyond WEB_SESSIONS wait for a session on the event loop, not in a thread
# (see app.db.WEB_SESSIONS: without it, many concurrent requests deadlock on the pool for 30 s).
DbSession = Annotated[Session, Depends(get_db, scope="function", max_concurrency=WEB_SESSIONS)]
AppSettings = Annotated[Settings, Depends(settings_dep)]
Store = Annotated[ArtifactStore, Depends(store_dep)]


def current_user(request: Request, db: DbSession) -> User:
    """The signed-in user from a Bearer token or the session cookie; raises LoginRequired. Looked
    up once per request (`authorize` and the route share it)."""
    cached = getattr(request.state, "signed_in", None)
    if cached is not None:
        return cached
    user = signed_in_user(request, db)
    request.state.signed_in = user
    return user


def authorize(request: Request, db: DbSession) -> None:
    """The app-wide access check (`FastAPI(dependencies=[Authorized])`): the route's rule from
    app/http/access.py; sign-in for every rule but PUBLIC, then the role. Fails closed."""
    route = request.scope.get("route")
    needed = rule_for(request.method, getattr(route, "path", ""))
    if needed is None:
        raise HTTPException(403, "This address has no access rule, so nobody may use it.")
    if needed == PUBLIC:
        return
    user = current_user(request, db)
    if not allows(user.role, user.is_admin, needed):
        what = "an instance administrator" if needed == ADMIN else f"the role {needed} or above"
        raise HTTPException(403, f"This needs {what}; your role in this workspace is {user.role}. Ask an owner of the workspace.")


CurrentUser = Annotated[User, Depends(current_user)]


def manage_scope(request: Request, user: CurrentUser) -> None:
    """The management API (/api/v1) takes Bearer tokens with the `manage` scope (a `serve`-only token calls /v1 only)."""
    require_token_scope(request, "manage")


# Router-level dependencies: `APIRouter(dependencies=[SignedIn, Csrf])`.
SignedIn = Depends(current_user)
Csrf = Depends(verify_csrf)
# The app-wide access check: `FastAPI(dependencies=[Authorized])`.
Authorized = Depends(authorize)
ManageScope = Depends(manage_scope)


def owned_dataset(dataset_id: int, user: CurrentUser, db: DbSession) -> Dataset:
    return dataset_in_workspace(db, dataset_id, user)


def owned_job(job_id: int, user: CurrentUser, db: DbSession) -> Job:
    return job_in_workspace(db, job_id, user)


def owned_adapter(adapter_id: int, user: CurrentUser, db: DbSession) -> Adapter:
    return adapter_in_workspace(db, adapter_id, user)


OwnedDataset = Annotated[Dataset, Depends(owned_dataset)]
OwnedJob = Annotated[Job, Depends(owned_job)]
OwnedAdapter = Annotated[Adapter, Depends(owned_adapter)]


def workspace_member(user_id: int, user: CurrentUser, db: DbSession) -> User:
    return member_in_workspace_or_404(db, user_id, user)


WorkspaceMember = Annotated[User, Depends(workspace_member)]
