"""HTML pages (Jinja + htmx) over the services; what they share with the JSON API lives in app/http."""

from app.web import adapters, audit, compare, datasets, groups, home, jobs, members, playground, quotas, review, tokens, workers

ROUTERS = (
    home.router,
    datasets.router,
    jobs.router,
    adapters.router,
    compare.router,
    groups.router,
    playground.router,
    quotas.router,
    review.router,
    workers.router,
    members.router,
    audit.router,
    tokens.router,
)
