"""The JSON API under /api/v1: every page's data, for scripts. Bearer tokens
(`tailor create-token`) or the browser session (with the X-CSRF-Token header for writes)."""

from app.api import adapters, catalogue, compare, datasets, groups, jobs, playground, preference, review, workers

ROUTERS = (
    datasets.router,
    catalogue.router,
    jobs.router,
    adapters.router,
    compare.router,
    groups.router,
    playground.router,
    review.router,
    preference.router,
    workers.router,
)
