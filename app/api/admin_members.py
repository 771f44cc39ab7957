"""Instance administrators and any workspace's people in the API: every workspace with its head
counts, a workspace's members, and changing a member's role or access (the rules owners have;
recorded in that workspace's audit log)."""

from __future__ import annotations

from fastapi import HTTPException, Request

from app.api.common import api_router
from app.http import people
from app.http.deps import CurrentUser, DbSession
from app.schemas_people import MemberPublic, MemberUpdate, WorkspacePeoplePublic
from app.services import members

router = api_router()


@router.get("/admin/workspaces")
def list_workspaces(db: DbSession) -> list[WorkspacePeoplePublic]:
    """Every workspace with its number of users, active owners and disabled users."""
    return [
        WorkspacePeoplePublic(
            id=w.workspace.id,
            name=w.workspace.name,
            created_at=w.workspace.created_at,
            members=w.members,
            active_owners=w.active_owners,
            disabled=w.disabled,
        )  # fmt: skip
        for w in members.workspaces_with_people(db)
    ]


@router.get("/admin/workspaces/{workspace_id}/members", response_model=list[MemberPublic], responses={404: {}})
def list_members(workspace_id: int, db: DbSession):
    return members.members_of(db, people.workspace_or_404(db, workspace_id).id)


@router.patch("/admin/workspaces/{workspace_id}/members/{user_id}", response_model=MemberPublic, responses={404: {}, 409: {}, 422: {}})
def update_member(request: Request, workspace_id: int, user_id: int, body: MemberUpdate, user: CurrentUser, db: DbSession):
    """Change a member's role and/or disable (true) or enable (false) them, as their owners can. The
    last active owner cannot be demoted or disabled (409); nobody disables themselves."""
    member = people.workspace_member_or_404(db, workspace_id, user_id)
    try:
        people.change_member(request, db, user, member, role=body.role, disabled=body.disabled)
    except members.MemberError as exc:
        db.rollback()
        raise HTTPException(exc.status, str(exc)) from None
    return member
