"""HTML pages (Jinja + htmx) and the dependencies shared with the JSON API."""

from app.web import adapters, datasets, home, jobs, workers

ROUTERS = (home.router, datasets.router, jobs.router, adapters.router, workers.router)
