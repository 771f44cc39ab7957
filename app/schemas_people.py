"""Request and response models of the JSON API for people: members, invites, API tokens and the
audit log (app/schemas.py holds the rest)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class MemberPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    email: str
    role: str
    is_admin: bool
    disabled_at: datetime | None = None
    created_at: datetime


class WorkspacePeoplePublic(BaseModel):
    id: int
    name: str
    created_at: datetime
    members: int = Field(..., description="users of the workspace, disabled ones included")
    active_owners: int
    disabled: int


class MemberUpdate(BaseModel):
    role: str | None = Field(None, description="viewer, member or owner")
    disabled: bool | None = Field(None, description="true disables the user (cannot sign in, sessions end), false enables them")


class InviteCreate(BaseModel):
    email: str = Field(..., max_length=320)
    role: str = Field("member", description="viewer, member or owner")


class InvitePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    email: str
    role: str
    created_at: datetime
    expires_at: datetime


class InviteCreated(InvitePublic):
    link: str = Field(..., description="The one-time link; shown once (only its hash is stored).")
    emailed: bool = Field(..., description="Whether it was sent by email (TAILOR_SMTP_HOST set and the server took it).")
    email_error: str | None = None


class AuditEventPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    created_at: datetime
    workspace_id: int | None
    user_id: int | None
    user_email: str | None
    action: str
    target_type: str | None
    target_id: str | None
    details: dict[str, Any]
    client_ip: str | None
    user_agent: str | None


class AuditPagePublic(BaseModel):
    page: int
    page_size: int
    total: int
    has_next: bool
    events: list[AuditEventPublic]
