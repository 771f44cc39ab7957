"""HTML pages (Jinja + htmx) and the dependencies shared with the JSON API."""
