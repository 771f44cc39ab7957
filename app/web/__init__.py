"""HTML pages (Jinja + htmx) and the dependencies shared with the JSON API."""

from app.web import adapters, compare, datasets, groups, home, jobs, playground, review, workers

ROUTERS = (home.router, datasets.router, jobs.router, adapters.router, compare.router, groups.router, playground.router, review.router, workers.router)
