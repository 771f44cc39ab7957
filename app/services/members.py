"""People in a workspace: invites (one-time links, stored hashed, with an expiry), accepting them,
changing roles, disabling, enabling and removing users. A workspace always keeps at least one
active owner. Services flush, never commit."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import and_, case, delete, func, select, update
from sqlalchemy.orm import Session

from app.domain.roles import ROLES, is_role
from app.models import Invite, User, Workspace, utcnow
from app.services.accounts import AccountError, create_user, get_user_by_email, normalise_email
from app.services.user_sessions import end_sessions


class MemberError(ValueError):
    """A request about people that cannot be done, worded for the person who asked."""

    def __init__(self, message: str, status: int = 409):
        super().__init__(message)
        self.status = status


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def aware(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; they are UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _check_role(role: str) -> str:
    if not is_role(role):
        raise MemberError(f"There is no role {role!r}; choose one of {', '.join(ROLES)}.", 422)
    return role


def members_of(db: Session, workspace_id: int) -> list[User]:
    return list(db.scalars(select(User).where(User.workspace_id == workspace_id).order_by(User.email)).all())


@dataclass(frozen=True)
class WorkspacePeople:
    """A workspace with how many people it has, for instance administrators."""

    workspace: Workspace
    members: int
    active_owners: int
    disabled: int


def workspaces_with_people(db: Session) -> list[WorkspacePeople]:
    """Every workspace by name, with its number of users, active owners and disabled users."""
    counts = {
        ws: (n, owners or 0, disabled or 0)
        for ws, n, owners, disabled in db.execute(
            select(
                User.workspace_id,
                func.count(),
                func.sum(case((and_(User.role == "owner", User.disabled_at.is_(None)), 1), else_=0)),
                func.sum(case((User.disabled_at.is_not(None), 1), else_=0)),
            ).group_by(User.workspace_id)
        ).all()
    }
    workspaces = db.scalars(select(Workspace).order_by(Workspace.name, Workspace.id)).all()
    return [WorkspacePeople(w, *counts.get(w.id, (0, 0, 0))) for w in workspaces]


def member_in_workspace(db: Session, user_id: int, workspace_id: int) -> User | None:
    user = db.get(User, user_id)
    return user if user is not None and user.workspace_id == workspace_id else None


def pending_invites(db: Session, workspace_id: int) -> list[Invite]:
    query = select(Invite).where(Invite.workspace_id == workspace_id, Invite.accepted_at.is_(None), Invite.expires_at > utcnow())
    return list(db.scalars(query.order_by(Invite.created_at.desc())).all())


def invite_in_workspace(db: Session, invite_id: int, workspace_id: int) -> Invite | None:
    invite = db.get(Invite, invite_id)
    return invite if invite is not None and invite.workspace_id == workspace_id and invite.accepted_at is None else None


@dataclass(frozen=True)
class NewInvite:
    invite: Invite
    token: str  # shown once (the link); only its hash is stored


def create_invite(db: Session, workspace_id: int, inviter: User, email: str, role: str, ttl_hours: float) -> NewInvite:
    """A one-time invite for this email with this role; an earlier unused invite for the same email
    in this workspace is replaced."""
    email = normalise_email(email)
    if "@" not in email or len(email) > 320 or any(c.isspace() or not c.isprintable() for c in email):
        raise MemberError("Give a valid email address.", 422)
    _check_role(role)
    if get_user_by_email(db, email) is not None:
        raise MemberError(f"{email} already has an account on this Tailor.")
    earlier = delete(Invite).where(Invite.workspace_id == workspace_id, Invite.email == email, Invite.accepted_at.is_(None))
    db.execute(earlier.execution_options(synchronize_session=False))
    token = "inv_" + secrets.token_urlsafe(32)
    invite = Invite(
        workspace_id=workspace_id,
        email=email,
        role=role,
        token_hash=token_digest(token),
        invited_by_id=inviter.id,
        expires_at=utcnow() + timedelta(hours=ttl_hours),
    )
    db.add(invite)
    db.flush()
    return NewInvite(invite, token)


def usable_invite(db: Session, token: str) -> Invite | None:
    """The invite behind a link, if it has not been used and has not expired."""
    invite = db.scalar(select(Invite).where(Invite.token_hash == token_digest(token)))
    if invite is None or invite.accepted_at is not None or aware(invite.expires_at) <= utcnow():
        return None
    return invite


def accept_invite(db: Session, token: str, password: str) -> User:
    """Use the link: create the account with this password in the invite's workspace and role.
    Works once (a conditional UPDATE claims it); an expired or used link is refused."""
    invite = usable_invite(db, token)
    if invite is None:
        raise MemberError("This invite link has expired or has already been used. Ask for a new one.", 410)
    claimed = db.execute(
        update(Invite)
        .where(Invite.id == invite.id, Invite.accepted_at.is_(None), Invite.expires_at > utcnow())
        .values(accepted_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        raise MemberError("This invite link has expired or has already been used. Ask for a new one.", 410)
    workspace = db.get(Workspace, invite.workspace_id)
    try:
        return create_user(db, invite.email, password, workspace=workspace, role=invite.role)
    except AccountError as exc:
        raise MemberError(str(exc), 422) from None


def revoke_invite(db: Session, invite: Invite) -> None:
    db.delete(invite)
    db.flush()


def _active_owners(db: Session, workspace_id: int) -> int:
    query = select(func.count()).where(User.workspace_id == workspace_id, User.role == "owner", User.disabled_at.is_(None))
    return db.scalar(query) or 0


def _keeps_an_owner(db: Session, member: User, what: str) -> None:
    if member.role == "owner" and member.disabled_at is None and _active_owners(db, member.workspace_id) <= 1:
        raise MemberError(f"{member.email} is the workspace's last owner: make someone else an owner before you {what}.")


def change_role(db: Session, member: User, role: str) -> str:
    """Set the member's role; returns the old one."""
    _check_role(role)
    old = member.role
    if role != "owner":
        _keeps_an_owner(db, member, "change their role")
    member.role = role
    db.flush()
    return old


def set_disabled(db: Session, actor: User, member: User, disabled: bool) -> None:
    """Disable (cannot sign in, sessions end) or enable a user."""
    if disabled and member.id == actor.id:
        raise MemberError("You cannot disable yourself; ask another owner.")
    if disabled and member.disabled_at is None:
        _keeps_an_owner(db, member, "disable them")
        member.disabled_at = utcnow()
        end_sessions(db, member.id)  # every browser of theirs is signed out at once
    elif not disabled:
        member.disabled_at = None
    db.flush()


def remove_member(db: Session, actor: User, member: User) -> None:
    """Delete the account; what they made stays in the workspace, and the audit log keeps their email."""
    if member.id == actor.id:
        raise MemberError("You cannot remove yourself; ask another owner.")
    _keeps_an_owner(db, member, "remove them")
    db.delete(member)
    db.flush()
