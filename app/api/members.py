"""People in the API (owners and administrators): members, their roles and access, invites."""

from __future__ import annotations

from fastapi import HTTPException, Request
from fastapi.responses import Response

from app.api.common import api_router
from app.http import people
from app.http.deps import AppSettings, CurrentUser, DbSession, WorkspaceMember
from app.schemas_people import InviteCreate, InviteCreated, InvitePublic, MemberPublic, MemberUpdate
from app.services import members

router = api_router()


def _refuse(exc: members.MemberError) -> HTTPException:
    return HTTPException(exc.status, str(exc))


@router.get("/members", response_model=list[MemberPublic])
def list_members(user: CurrentUser, db: DbSession):
    return members.members_of(db, user.workspace_id)


@router.patch("/members/{user_id}", response_model=MemberPublic, responses={404: {}, 409: {}, 422: {}})
def update_member(request: Request, body: MemberUpdate, member: WorkspaceMember, user: CurrentUser, db: DbSession):
    """Change a member's role and/or disable (true) or enable (false) them. The last active owner
    cannot be demoted or disabled (409)."""
    try:
        people.change_member(request, db, user, member, role=body.role, disabled=body.disabled)
    except members.MemberError as exc:
        db.rollback()
        raise _refuse(exc) from None
    return member


@router.delete("/members/{user_id}", status_code=204, responses={404: {}, 409: {}})
def remove_member(request: Request, member: WorkspaceMember, user: CurrentUser, db: DbSession):
    """Delete the account (what they made stays); not the last owner, not yourself."""
    try:
        people.remove_member(request, db, user, member)
    except members.MemberError as exc:
        db.rollback()
        raise _refuse(exc) from None
    return Response(status_code=204)


@router.get("/invites", response_model=list[InvitePublic])
def list_invites(user: CurrentUser, db: DbSession):
    """Invites not yet used and not expired."""
    return members.pending_invites(db, user.workspace_id)


@router.post("/invites", status_code=201, responses={409: {}, 422: {}})
def create_invite(request: Request, body: InviteCreate, user: CurrentUser, db: DbSession, settings: AppSettings) -> InviteCreated:
    """A one-time link for this email and role (expires after TAILOR_INVITE_TTL_HOURS); emailed when
    TAILOR_SMTP_HOST is set. The link is in the answer either way and is never shown again."""
    try:
        outcome = people.invite(request, db, settings, user, body.email, body.role)
    except members.MemberError as exc:
        db.rollback()
        raise _refuse(exc) from None
    return InviteCreated(
        **InvitePublic.model_validate(outcome.invite).model_dump(),
        link=outcome.link,
        emailed=outcome.emailed,
        email_error=outcome.email_error,
    )


@router.delete("/invites/{invite_id}", status_code=204, responses={404: {}})
def revoke_invite(request: Request, invite_id: int, user: CurrentUser, db: DbSession):
    invite = members.invite_in_workspace(db, invite_id, user.workspace_id)
    if invite is None:
        raise HTTPException(404, "There is no such invite in your workspace.")
    people.revoke_invite(request, db, user, invite)
    return Response(status_code=204)
