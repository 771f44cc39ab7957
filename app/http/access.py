"""Who may use which address: THE table of access rules, one line per route (method + path
template → the weakest role that may use it). One app-wide dependency (`app.http.deps.authorize`)
checks it on every request, before the route runs; a route with no rule is refused (403), and
tests/app/test_access_rules.py fails for it, so a new route cannot ship without one.

Rules: PUBLIC (no sign-in), a role from app/domain/roles.py (viewer < member < owner; instance
administrators pass every rule), or ADMIN (administrators only). Rows of another workspace are
404 in the routes' own lookups, whatever the role."""

from __future__ import annotations

from app.domain.roles import ADMIN

PUBLIC = "public"
VIEWER, MEMBER, OWNER = "viewer", "member", "owner"
__all__ = ["ADMIN", "MEMBER", "OWNER", "PUBLIC", "RULES", "VIEWER", "rule_for"]


def _rules(needed: str, *routes: str) -> dict[tuple[str, str], str]:
    return {(line.split()[0], line.split()[1]): needed for line in routes}


RULES: dict[tuple[str, str], str] = {
    **_rules(
        PUBLIC,
        "GET /health",
        "GET /login",
        "POST /login",
        "POST /logout",
        "GET /invite/{token}",
        "POST /invite/{token}",
    ),
    # The OpenAI-compatible endpoint authenticates each call itself (a token with the `serve` scope,
    # errors in OpenAI's body: app/openai_api/calls.py) and serves only the token's workspace.
    **_rules(
        PUBLIC,
        "GET /v1/models",
        "GET /v1/models/{model:path}",
        "POST /v1/chat/completions",
        "POST /v1/completions",
    ),
    # Reading anything in the workspace, and the blind review (viewers vote too).
    **_rules(
        VIEWER,
        "GET /",
        "GET /openapi.json",
        "GET /docs",
        "GET /datasets/{dataset_id}",
        "GET /datasets/{dataset_id}/rows",
        "GET /datasets/{dataset_id}/token-lengths",
        "GET /datasets/{dataset_id}/export.csv",
        "GET /datasets/{dataset_id}/labels",
        "GET /jobs/{job_id}",
        "GET /adapters",
        "GET /adapters/{adapter_id}",
        "GET /adapters/{adapter_id}/request-log.csv",
        "GET /usage",
        "GET /corrections",
        "GET /api/v1/corrections",
        "GET /api/v1/preference-datasets/votes",
        "GET /api/v1/usage",
        "GET /api/v1/adapters/{adapter_id}/serving",
        "GET /api/v1/adapters/{adapter_id}/request-log",
        "GET /api/v1/adapters/{adapter_id}/request-log.csv",
        "GET /adapters/{adapter_id}/download",
        "GET /adapters/{adapter_id}/merged",
        "GET /adapters/{adapter_id}/gguf",
        "GET /compare",
        "GET /compare.csv",
        "GET /groups/{group_id}",
        "GET /playground",
        "GET /playground/{request_id}/events",
        "GET /review",
        "POST /review/{token}",
        "GET /workers",
        "GET /api/v1/datasets",
        "GET /api/v1/datasets/{dataset_id}",
        "GET /api/v1/datasets/{dataset_id}/profile",
        "GET /api/v1/datasets/{dataset_id}/rows",
        "GET /api/v1/datasets/{dataset_id}/token-lengths",
        "GET /api/v1/datasets/{dataset_id}/labels",
        "GET /api/v1/datasets/{dataset_id}/column-guess",
        "GET /api/v1/datasets/{dataset_id}/split-check",
        "GET /api/v1/techniques",
        "GET /api/v1/base-models",
        "GET /api/v1/jobs",
        "GET /api/v1/jobs/{job_id}",
        "GET /api/v1/adapters",
        "GET /api/v1/adapters/{adapter_id}",
        "GET /api/v1/adapters/{adapter_id}/download",
        "GET /api/v1/adapters/{adapter_id}/downloads",
        "GET /api/v1/adapters/{adapter_id}/merged",
        "GET /api/v1/adapters/{adapter_id}/gguf",
        "GET /api/v1/compare",
        "GET /api/v1/groups/{group_id}",
        "GET /api/v1/playground/{request_id}",
        "GET /api/v1/review/next",
        "POST /api/v1/review/{token}",
        "GET /api/v1/workers",
        "GET /api/v1/tokens",
        "GET /settings/tokens",
        # rated request log: reviewers rate served answers
        "POST /adapters/{adapter_id}/request-log/{entry_id}/rating",
        "PUT /api/v1/adapters/{adapter_id}/request-log/{entry_id}/rating",
        "GET /api/v1/adapters/{adapter_id}/feedback-dataset",
    ),
    # Sessions and SSO (issue 16): the provider sends the browser back without a Tailor session.
    **_rules(PUBLIC, "GET /login/sso", "GET /login/sso/callback"),
    # Everyone's own account: their sessions and their password.
    **_rules(
        VIEWER,
        "GET /account",
        "POST /account/sessions/{session_id}/end",
        "POST /account/sessions/end-others",
        "POST /account/password",
        "GET /api/v1/account/sessions",
        "DELETE /api/v1/account/sessions/{session_id}",
        "POST /api/v1/account/sessions/end-others",
        "POST /api/v1/account/password",
    ),
    # Changing the workspace's data: upload, train, cancel, delete, ship, export, the playground, tokens.
    **_rules(
        MEMBER,
        "GET /datasets/new",
        "POST /datasets",
        "POST /datasets/{dataset_id}/personal-data",
        "POST /datasets/{dataset_id}/delete",
        "POST /jobs",
        "POST /jobs/estimate",
        "POST /jobs/preview",
        "POST /jobs/{job_id}/cancel",
        "POST /adapters/{adapter_id}/status",
        "POST /adapters/{adapter_id}/export",
        "POST /adapters/{adapter_id}/export-gguf",
        "POST /adapters/{adapter_id}/evaluate",
        "POST /playground",
        "POST /api/v1/datasets",
        "POST /api/v1/datasets/{dataset_id}/personal-data",
        "DELETE /api/v1/datasets/{dataset_id}",
        "POST /api/v1/jobs",
        "POST /api/v1/jobs/preview",
        "POST /api/v1/jobs/{job_id}/cancel",
        "PATCH /api/v1/adapters/{adapter_id}",
        "POST /api/v1/adapters/{adapter_id}/export",
        "POST /api/v1/adapters/{adapter_id}/export-gguf",
        "POST /api/v1/adapters/{adapter_id}/evaluate",
        "POST /api/v1/bakeoffs",
        "POST /api/v1/playground",
        "POST /api/v1/tokens",
        "DELETE /api/v1/tokens/{token_id}",
        "POST /adapters/{adapter_id}/request-log",
        "POST /corrections",
        "POST /api/v1/corrections",
        "POST /preference-datasets/corrections",
        "POST /preference-datasets/votes",
        "POST /api/v1/preference-datasets/corrections",
        "POST /api/v1/preference-datasets/votes",
        "PUT /api/v1/adapters/{adapter_id}/request-log",
        "POST /settings/tokens",
        "POST /settings/tokens/{token_id}/revoke",
        # rated request log: a feedback dataset from the rated answers
        "POST /adapters/{adapter_id}/feedback-dataset",
        "POST /api/v1/adapters/{adapter_id}/feedback-dataset",
    ),
    # People and the audit log.
    **_rules(
        OWNER,
        "GET /settings/members",
        "POST /settings/members/invite",
        "POST /settings/invites/{invite_id}/revoke",
        "POST /settings/members/{user_id}/role",
        "POST /settings/members/{user_id}/disable",
        "POST /settings/members/{user_id}/enable",
        "POST /settings/members/{user_id}/remove",
        "GET /settings/audit",
        "GET /settings/audit.csv",
        "GET /api/v1/members",
        "PATCH /api/v1/members/{user_id}",
        "DELETE /api/v1/members/{user_id}",
        "GET /api/v1/invites",
        "POST /api/v1/invites",
        "DELETE /api/v1/invites/{invite_id}",
        "GET /api/v1/audit",
        # quotas (issue 16): the workspace's limits and usage
        "GET /settings/quotas",
        "GET /api/v1/quotas",
    ),
    # Instance administration: every workspace's quotas and people (issue 16).
    **_rules(
        ADMIN,
        "GET /admin/quotas",
        "POST /admin/quotas/{workspace_id}",
        "GET /api/v1/admin/quotas",
        "PUT /api/v1/admin/quotas/{workspace_id}",
        # any workspace's people: roles, disabling and enabling, with the owners' rules
        "GET /admin/workspaces",
        "GET /admin/workspaces/{workspace_id}/members",
        "POST /admin/workspaces/{workspace_id}/members/{user_id}/role",
        "POST /admin/workspaces/{workspace_id}/members/{user_id}/disable",
        "POST /admin/workspaces/{workspace_id}/members/{user_id}/enable",
        "GET /api/v1/admin/workspaces",
        "GET /api/v1/admin/workspaces/{workspace_id}/members",
        "PATCH /api/v1/admin/workspaces/{workspace_id}/members/{user_id}",
    ),
}


def rule_for(method: str, path: str) -> str | None:
    """The rule of a route (HEAD as GET), or None when the route has none."""
    return RULES.get(("GET" if method == "HEAD" else method, path))
