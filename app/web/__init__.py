"""HTML pages (Jinja + htmx) over the services; what they share with the JSON API lives in app/http."""

from app.web import (
    account,
    adapters,
    audit,
    compare,
    datasets,
    groups,
    home,
    jobs,
    members,
    playground,
    preference,
    review,
    serving,
    sso,
    tokens,
    workers,
)

ROUTERS = (
    home.router,
    datasets.router,
    jobs.router,
    adapters.router,
    compare.router,
    groups.router,
    playground.router,
    review.router,
    preference.router,
    workers.router,
    members.router,
    audit.router,
    tokens.router,
    account.router,
    sso.router,
    serving.router,
)
