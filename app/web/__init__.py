"""HTML pages (Jinja + htmx) over the services; what they share with the JSON API lives in app/http."""

from app.web import adapters, compare, datasets, groups, home, jobs, playground, preference, review, workers

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
)
