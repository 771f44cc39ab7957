"""Quota pages: a workspace's limits and usage (its owners, /settings/quotas), and every
workspace's with a form to change them (instance administrators, /admin/quotas, audited)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request

from app.http import auditing
from app.http.deps import AppSettings, Csrf, CurrentUser, DbSession
from app.http.responses import redirect
from app.models import Workspace
from app.services import quotas
from app.web.templating import render

router = APIRouter(dependencies=[Csrf])


@router.get("/settings/quotas")
def my_quotas(request: Request, user: CurrentUser, db: DbSession, settings: AppSettings):
    return render(request, "quotas.html", {"usages": quotas.usage_of(db, settings, [user.workspace_id]), "admin_view": False})


@router.get("/admin/quotas")
def all_quotas(request: Request, db: DbSession, settings: AppSettings, saved: int | None = None):
    return render(
        request,
        "quotas.html",
        {"usages": quotas.usage_of(db, settings), "admin_view": True, "defaults": quotas.default_limits(settings), "saved": saved},
    )


@router.post("/admin/quotas/{workspace_id}")
async def set_quotas(request: Request, workspace_id: int, user: CurrentUser, db: DbSession, settings: AppSettings):
    if db.get(Workspace, workspace_id) is None:
        raise HTTPException(404, "There is no such workspace.")
    form = await request.form()
    try:
        change = quotas.set_overrides(db, workspace_id, {key: form.get(key) for key in quotas.LIMITS}, user.id)
    except ValueError as exc:
        db.rollback()
        return render(
            request,
            "quotas.html",
            {
                "usages": quotas.usage_of(db, settings),
                "admin_view": True,
                "defaults": quotas.default_limits(settings),
                "error": str(exc),
                "error_workspace": workspace_id,
            },
            status_code=422,
        )
    auditing.record(request, db, user, "quota_changed", ("workspace", workspace_id), change, workspace_id=workspace_id)
    return redirect(request, f"/admin/quotas?saved={workspace_id}")
