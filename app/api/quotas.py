"""Quotas in the API: a workspace's limits and usage (its owners), every workspace's and setting
them (instance administrators, audited)."""

from __future__ import annotations

from fastapi import HTTPException, Request

from app.api.common import api_router
from app.http import auditing
from app.http.deps import AppSettings, CurrentUser, DbSession
from app.models import Workspace
from app.schemas_quotas import QuotaLine, QuotaUpdate, WorkspaceQuotaPublic
from app.services import quotas

router = api_router()


def _public(usage: quotas.QuotaUsage) -> WorkspaceQuotaPublic:
    return WorkspaceQuotaPublic(
        workspace_id=usage.workspace_id, workspace_name=usage.workspace_name, quotas=[QuotaLine(**row) for row in usage.rows()]
    )


@router.get("/quotas")
def my_quotas(user: CurrentUser, db: DbSession, settings: AppSettings) -> WorkspaceQuotaPublic:
    """This workspace's limits and what it has used."""
    return _public(quotas.usage_of(db, settings, [user.workspace_id])[0])


@router.get("/admin/quotas")
def all_quotas(db: DbSession, settings: AppSettings) -> list[WorkspaceQuotaPublic]:
    """Every workspace's limits and usage (instance administrators)."""
    return [_public(u) for u in quotas.usage_of(db, settings)]


@router.put("/admin/quotas/{workspace_id}", responses={404: {}, 422: {}})
def set_quotas(
    request: Request, workspace_id: int, body: QuotaUpdate, user: CurrentUser, db: DbSession, settings: AppSettings
) -> WorkspaceQuotaPublic:
    """Set a workspace's limits (null = the instance default, 0 = unlimited); recorded in the audit log."""
    if db.get(Workspace, workspace_id) is None:
        raise HTTPException(404, "There is no such workspace.")
    try:
        change = quotas.set_overrides(db, workspace_id, body.model_dump(), user.id)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    auditing.record(request, db, user, "quota_changed", ("workspace", workspace_id), change, workspace_id=workspace_id)
    return _public(quotas.usage_of(db, settings, [workspace_id])[0])
