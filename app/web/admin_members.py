"""Instance administrators manage any workspace's people: every workspace (/admin/workspaces) and
one workspace's members (/admin/workspaces/{id}/members), whose roles they change and whom they
disable or enable — the same rules as owners have (the last active owner stays, nobody disables
themselves), recorded in that workspace's audit log."""

from __future__ import annotations

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse

from app.domain.roles import ROLE_HELP, ROLES
from app.http import people
from app.http.deps import Csrf, CurrentUser, DbSession
from app.services import members
from app.web.templating import render

router = APIRouter(dependencies=[Csrf])


@router.get("/admin/workspaces")
def workspaces_page(request: Request, db: DbSession):
    return render(request, "admin_workspaces.html", {"workspaces": members.workspaces_with_people(db)})


def _members_page(request: Request, db, user, workspace_id: int, status_code: int = 200, **extra):
    workspace = people.workspace_or_404(db, workspace_id)
    ctx = {
        "members": members.members_of(db, workspace.id),
        "roles": ROLES,
        "role_help": ROLE_HELP,
        "me": user.id,
        "workspace": workspace,
        "member_base": f"/admin/workspaces/{workspace.id}/members",
    }
    ctx.update(extra)
    return render(request, "members.html", ctx, status_code=status_code)


@router.get("/admin/workspaces/{workspace_id}/members")
def members_page(request: Request, workspace_id: int, user: CurrentUser, db: DbSession):
    return _members_page(request, db, user, workspace_id)


def _change(request: Request, db, user, workspace_id: int, user_id: int, **change):
    member = people.workspace_member_or_404(db, workspace_id, user_id)
    try:
        people.change_member(request, db, user, member, **change)
    except members.MemberError as exc:
        db.rollback()
        return _members_page(request, db, user, workspace_id, exc.status, error=str(exc))
    return RedirectResponse(f"/admin/workspaces/{member.workspace_id}/members", status_code=303)


@router.post("/admin/workspaces/{workspace_id}/members/{user_id}/role")
def change_role(request: Request, workspace_id: int, user_id: int, user: CurrentUser, db: DbSession, role: str = Form("")):
    return _change(request, db, user, workspace_id, user_id, role=role)


@router.post("/admin/workspaces/{workspace_id}/members/{user_id}/disable")
def disable(request: Request, workspace_id: int, user_id: int, user: CurrentUser, db: DbSession):
    return _change(request, db, user, workspace_id, user_id, disabled=True)


@router.post("/admin/workspaces/{workspace_id}/members/{user_id}/enable")
def enable(request: Request, workspace_id: int, user_id: int, user: CurrentUser, db: DbSession):
    return _change(request, db, user, workspace_id, user_id, disabled=False)
