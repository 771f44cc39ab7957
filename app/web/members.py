"""People in the workspace (owners and administrators): members with their roles, invites,
disabling and removing users; and the public page where an invite link is accepted."""

from __future__ import annotations

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import RedirectResponse

from app.domain.roles import ROLE_HELP, ROLES
from app.http import auditing, people
from app.http.deps import AppSettings, Csrf, CurrentUser, DbSession, WorkspaceMember
from app.services import members
from app.web.templating import render

router = APIRouter(dependencies=[Csrf])


def _members_page(request: Request, db, user, status_code: int = 200, **extra):
    ctx = {
        "members": members.members_of(db, user.workspace_id),
        "invites": members.pending_invites(db, user.workspace_id),
        "roles": ROLES,
        "role_help": ROLE_HELP,
        "me": user.id,
    }
    ctx.update(extra)
    return render(request, "members.html", ctx, status_code=status_code)


@router.get("/settings/members")
def members_page(request: Request, user: CurrentUser, db: DbSession):
    return _members_page(request, db, user)


@router.post("/settings/members/invite")
def invite(request: Request, user: CurrentUser, db: DbSession, settings: AppSettings, email: str = Form(""), role: str = Form("member")):
    try:
        outcome = people.invite(request, db, settings, user, email, role)
    except members.MemberError as exc:
        db.rollback()
        return _members_page(request, db, user, exc.status, error=str(exc), invite_email=email, invite_role=role)
    return _members_page(request, db, user, 201, new_invite=outcome)


@router.post("/settings/invites/{invite_id}/revoke")
def revoke_invite(request: Request, invite_id: int, user: CurrentUser, db: DbSession):
    invite = members.invite_in_workspace(db, invite_id, user.workspace_id)
    if invite is None:
        raise HTTPException(404, "There is no such invite in your workspace.")
    people.revoke_invite(request, db, user, invite)
    return RedirectResponse("/settings/members", status_code=303)


def _change(request: Request, db, user, member, **change):
    try:
        if change.get("remove"):
            people.remove_member(request, db, user, member)
        else:
            people.change_member(request, db, user, member, **change)
    except members.MemberError as exc:
        db.rollback()
        return _members_page(request, db, user, exc.status, error=str(exc))
    return RedirectResponse("/settings/members", status_code=303)


@router.post("/settings/members/{user_id}/role")
def change_role(request: Request, member: WorkspaceMember, user: CurrentUser, db: DbSession, role: str = Form("")):
    return _change(request, db, user, member, role=role)


@router.post("/settings/members/{user_id}/disable")
def disable(request: Request, member: WorkspaceMember, user: CurrentUser, db: DbSession):
    return _change(request, db, user, member, disabled=True)


@router.post("/settings/members/{user_id}/enable")
def enable(request: Request, member: WorkspaceMember, user: CurrentUser, db: DbSession):
    return _change(request, db, user, member, disabled=False)


@router.post("/settings/members/{user_id}/remove")
def remove(request: Request, member: WorkspaceMember, user: CurrentUser, db: DbSession):
    return _change(request, db, user, member, remove=True)


# ------------------------------------------------------------------ accepting an invite (public)

EXPIRED = "This invite link has expired or has already been used. Ask the person who invited you for a new one."


@router.get("/invite/{token}")
def invite_page(request: Request, token: str, db: DbSession):
    invite = members.usable_invite(db, token)
    if invite is None:
        return render(request, "invite_accept.html", {"error": EXPIRED}, status_code=410)
    return render(request, "invite_accept.html", {"invite": invite, "token": token})


@router.post("/invite/{token}")
def accept_invite(request: Request, token: str, db: DbSession, password: str = Form(""), password_again: str = Form("")):
    invite = members.usable_invite(db, token)
    if invite is None:
        return render(request, "invite_accept.html", {"error": EXPIRED}, status_code=410)
    if password != password_again:
        return render(
            request, "invite_accept.html", {"invite": invite, "token": token, "error": "The two passwords differ."}, status_code=422
        )
    try:
        user = members.accept_invite(db, token, password)
    except members.MemberError as exc:
        db.rollback()
        context = (
            {"error": str(exc)} if exc.status == 410 else {"invite": members.usable_invite(db, token), "token": token, "error": str(exc)}
        )
        return render(request, "invite_accept.html", context, status_code=exc.status)
    auditing.record(request, db, user, "invite_accepted", ("invite", invite.id), {"role": user.role})
    notice = "Your account is ready. Sign in with your email and the password you chose."
    return render(request, "login.html", {"notice": notice, "email": user.email, "next": "/"})
