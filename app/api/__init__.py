"""The JSON API under /api/v1: every page's data, for scripts. Bearer tokens
(`tailor create-token`) or the browser session (with the X-CSRF-Token header for writes)."""

from app.api import (
    account,
    adapters,
    admin_members,
    audit,
    catalogue,
    compare,
    datasets,
    groups,
    jobs,
    members,
    playground,
    preference,
    quotas,
    review,
    tokens,
    usage,
    workers,
)

ROUTERS = (
    datasets.router,
    catalogue.router,
    jobs.router,
    adapters.router,
    compare.router,
    groups.router,
    playground.router,
    quotas.router,
    review.router,
    preference.router,
    workers.router,
    members.router,
    admin_members.router,
    tokens.router,
    audit.router,
    account.router,
    usage.router,
)
