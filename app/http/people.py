"""What the members pages and the members API share: inviting (the link, the email when SMTP is
set up), changing a member's role or access, removing them, each recorded in the audit log of the
member's workspace (also when an instance administrator of another workspace acts, through
/admin/workspaces). Raises members.MemberError for the caller to show."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import HTTPException, Request
from sqlalchemy.orm import Session

from app.config import Settings
from app.domain.numbers import record_id
from app.http import auditing
from app.models import Invite, User, Workspace
from app.services import mail, members


@dataclass(frozen=True)
class InviteOutcome:
    invite: Invite
    link: str
    emailed: bool
    email_error: str | None


def invite(request: Request, db: Session, settings: Settings, actor: User, email: str, role: str) -> InviteOutcome:
    """Create a one-time invite; email the link when SMTP is configured; the link is returned either way."""
    new = members.create_invite(db, actor.workspace_id, actor, email, role, settings.invite_ttl_hours)
    link = str(request.base_url).rstrip("/") + f"/invite/{new.token}"
    emailed, error = False, None
    if mail.mail_configured(settings):
        workspace = actor.workspace.name if actor.workspace else "Tailor"
        message = mail.invite_message(settings, new.invite.email, link, workspace, actor.email, new.invite.role, settings.invite_ttl_hours)
        try:
            mail.send(settings, message)
            emailed = True
        except mail.MailError as exc:
            error = str(exc)
    details = {"email": new.invite.email, "role": new.invite.role, "emailed": emailed}
    auditing.record(request, db, actor, "member_invited", ("invite", new.invite.id), details)
    return InviteOutcome(new.invite, link, emailed, error)


def revoke_invite(request: Request, db: Session, actor: User, invite: Invite) -> None:
    details = {"email": invite.email, "role": invite.role}
    target = ("invite", invite.id)
    members.revoke_invite(db, invite)
    auditing.record(request, db, actor, "invite_revoked", target, details)


def change_member(
    request: Request, db: Session, actor: User, member: User, *, role: str | None = None, disabled: bool | None = None
) -> None:
    """Change a member's role and/or disable or enable them."""
    if role is not None and role != member.role:
        old = members.change_role(db, member, role)
        details = {"email": member.email, "from": old, "to": role}
        auditing.record(request, db, actor, "role_changed", ("user", member.id), details, workspace_id=member.workspace_id)
    if disabled is not None and disabled != (member.disabled_at is not None):
        members.set_disabled(db, actor, member, disabled)
        # INTEGRATOR: if disabled: end_sessions(db, member.id)  -- sec-auth's service, ends their sessions at once
        action = "member_disabled" if disabled else "member_enabled"
        auditing.record(request, db, actor, action, ("user", member.id), {"email": member.email}, workspace_id=member.workspace_id)


def remove_member(request: Request, db: Session, actor: User, member: User) -> None:
    target, details, workspace_id = ("user", member.id), {"email": member.email, "role": member.role}, member.workspace_id
    # INTEGRATOR: end_sessions(db, member.id)  -- sec-auth's service (deleting the user also ends them if sessions cascade)
    members.remove_member(db, actor, member)
    auditing.record(request, db, actor, "member_removed", target, details, workspace_id=workspace_id)


# --- instance administrators: any workspace's people (/admin/workspaces, /api/v1/admin/workspaces)


def workspace_or_404(db: Session, workspace_id: int) -> Workspace:
    key = record_id(workspace_id)
    workspace = db.get(Workspace, key) if key is not None else None
    if workspace is None:
        raise HTTPException(404, "There is no such workspace.")
    return workspace


def workspace_member_or_404(db: Session, workspace_id: int, user_id: int) -> User:
    """A user of that workspace (any workspace: the routes are for administrators only), else 404."""
    workspace = workspace_or_404(db, workspace_id)
    key = record_id(user_id)
    member = members.member_in_workspace(db, key, workspace.id) if key is not None else None
    if member is None:
        raise HTTPException(404, "There is no such user in that workspace.")
    return member
