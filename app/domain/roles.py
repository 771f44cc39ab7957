"""Roles within a workspace, weakest first, and what each may do. Instance administrators
(users.is_admin) may do everything an owner may, in their own workspace, and read the whole
instance's audit log. Pure: no database, no web."""

from __future__ import annotations

# Each role may do what the roles before it may, and more.
ROLES = ("viewer", "member", "owner")
ROLE_HELP = {
    "viewer": "reads everything in the workspace and takes part in blind reviews",
    "member": "also uploads data, trains, evaluates, exports, ships adapters and uses the playground",
    "owner": "also invites people, changes roles, disables and removes users, and reads the audit log",
}
ADMIN = "admin"  # a rule only instance administrators pass
RANK = {role: rank for rank, role in enumerate(ROLES)}


def is_role(value: str) -> bool:
    return value in RANK


def allows(role: str, is_admin: bool, needed: str) -> bool:
    """Whether a user with this role (and administrator flag) passes a rule needing `needed`
    (a role, or ADMIN). An unknown role passes nothing but what administrators grant."""
    if is_admin:
        return True
    if needed == ADMIN:
        return False
    return RANK.get(role, -1) >= RANK[needed]
